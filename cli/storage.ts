// The settings store's budget (issue 11): DeviceScript's settings store is the only flash a
// program has, and when it is full writes, overwrites and deletes fail silently. The flash queue
// (firmware/store.ts: QUEUE_SLOTS slots of at most MAX_FRAME_BYTES) and every other setting the
// meter keeps must fit the board's bank, or the build (and a config that would grow it) is refused.
//
// Cost per entry (DeviceScript 2.16 runtime, fstor): the value's length rounded up to 8 B, plus a
// 24 B entry header. Values written with writeSetting are JSON.
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { paths } from "../sim/src/paths.js"

export const ENTRY_HEADER_BYTES = 24
export const entryBytes = (valueBytes: number) => Math.ceil(valueBytes / 8) * 8 + ENTRY_HEADER_BYTES

/** QUEUE_SLOTS and MAX_FRAME_BYTES as firmware/store.ts declares them (one source). */
export function storeConstants(): { slots: number; maxFrameBytes: number } {
  const src = readFileSync(join(paths.root, "firmware/store.ts"), "utf8")
  const num = (name: string) => {
    const m = new RegExp(`export const ${name} = (\\d+)`).exec(src)
    if (!m) throw new Error(`firmware/store.ts declares no ${name}`)
    return Number(m[1])
  }
  return { slots: num("QUEUE_SLOTS"), maxFrameBytes: num("MAX_FRAME_BYTES") }
}

/**
 * The largest value each key the firmware may write can hold, bytes of JSON: identity and broker
 * (provisioned), the tunables a config downlink may persist, the boot counter, the downlink replay
 * mark, the sealing key and the state record (ring positions, drop count, totals ≤ 2^53 each).
 */
const KEY_MAX_BYTES: Record<string, number> = {
  METER_ID: 66,
  BOARD: 66,
  MQTT_HOST: 130,
  MQTT_PORT: 5,
  MQTT_PROTO: 5,
  MQTT_USER: 66,
  MQTT_PASS: 130,
  SEAL_KEY: 66,
  BOOT: 10,
  DL_MS: 16,
  st: 9 * 22,
  INTERVAL_S: 5,
  BATCH: 1,
  LEAK_S: 7,
  BURST_MLMIN: 10,
  BACKFLOW_ML: 8,
  NO_FLOW_S: 8,
  P_LOW_PA: 8,
  P_HIGH_PA: 8,
  UNDERVOLT_DV: 5,
  SUPLOSS_DV: 5,
  PULSES_PER_L: 6,
  IMP_PER_KWH: 6,
  MAX_FLOW_LMIN: 6,
  MAX_POWER_W: 7,
}

export interface StorageBudget {
  bankBytes: number
  slots: number
  maxFrameBytes: number
  queueBytes: number
  otherBytes: number
  freeBytes: number
}

/** Worst-case use of the settings bank: the full queue plus every other key at its largest. */
export function storageBudget(bankBytes: number, settings: Record<string, unknown> = {}): StorageBudget {
  const { slots, maxFrameBytes } = storeConstants()
  const queueBytes = slots * entryBytes(maxFrameBytes)
  const keys = { ...KEY_MAX_BYTES }
  for (const [k, v] of Object.entries(settings)) keys[k] = Math.max(keys[k] ?? 0, Buffer.byteLength(JSON.stringify(v)))
  const otherBytes = Object.values(keys).reduce((s, n) => s + entryBytes(n), 0)
  return { bankBytes, slots, maxFrameBytes, queueBytes, otherBytes, freeBytes: bankBytes - queueBytes - otherBytes }
}

/** Why the queue and settings would overflow the board's bank, or undefined when they fit. */
export function queueFootprintError(
  board: string,
  bankBytes: number,
  settings: Record<string, unknown> = {},
): string | undefined {
  const b = storageBudget(bankBytes, settings)
  if (b.freeBytes >= 0) return undefined
  return (
    `the flash queue (${b.slots} slots x ${entryBytes(b.maxFrameBytes)} B = ${b.queueBytes} B) and the other settings ` +
    `(${b.otherBytes} B) need ${b.queueBytes + b.otherBytes} B, over the ${bankBytes} B settings bank of ${board}: ` +
    `DeviceScript's settings store would then fail silently; lower QUEUE_SLOTS in firmware/store.ts`
  )
}
