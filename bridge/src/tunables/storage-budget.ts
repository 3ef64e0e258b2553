// Storage: the flash queue in the settings store. The worst-case frame a queue slot holds, the
// exact budget of a board's settings bank (storageBudget), and why a BATCH or a queue would not fit.
//
// DeviceScript 2.16 keeps every setting in one store (jacdac-c source/jd_fstor.c; facts and line
// numbers from that file, summarised in proto/tunables.json storage.$layout):
//   - a bank is `header_pages` flash pages (line 22): total store / page size / 16, at least 1
//     (lines 201-207). The Pico W's store is 32 pages of 4 KB (devicescript-pico src/jd_user_config.h
//     JD_FSTOR_TOTAL_SIZE 128 KB), so 2 pages = 8192 B; the ESP32 runtime's is its 256 KB `fstor`
//     partition (devicescript-esp32 boards/partitions.csv), so 4 pages = 16384 B; the simulator's
//     WASM VM formats 128 KB (runtime/posix/flash.c em_flash_size), as the Pico W;
//   - a bank starts with a 24 B header (lines 36-48); entries of 24 B (key[16], offset, size:
//     lines 28-32) grow up from it, values grow down from the bank's end aligned to 8 B, an empty
//     value taking 8 (align_core, lines 68-76; lines 303, 312);
//   - a write needs its value and entry free (line 304), and free_space() keeps one more entry
//     free to end the list (line 128): the records of a bank sum to at most bank - 48 B;
//   - a full bank is collected into the other bank (jd_fstor_gc, lines 240-270) keeping the newest
//     copy of each key: while a key is rewritten its old copy still counts, so a rewrite needs its
//     new record free on top of every live record; when it is not, the write returns -3 (line 308),
//     which the settings service ignores (services/settings.c line 60);
//   - the runtime keeps its own records in the same bank: the Wi-Fi network (`wifi_ssid`,
//     `wifi_psk`, network/wifi.c lines 171-172), the cloud link's connection string during an update
//     window (`wssk_connstr`, network/wssk_health.c; at most 120 B, proto UpdateWindow.conn) and the
//     program's entry `*prog`, whose bytes live in the data pages after the banks (only its 24 B
//     entry is in the bank, lines 254, 369-405).
import { existsSync, readFileSync, readdirSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import schema from "../../../proto/tunables.json" with { type: "json" }
import { citymeter } from "../gen/citymeter.js"
import { TAG_BYTES } from "../seal.js"
import { TUNABLES, TUNABLE_BY_NAME } from "./schema.js"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../../..")

export const STORAGE = schema.storage

/** Bytes a bank's header and the empty entry that ends its list take (jd_fstor.c lines 36-48, 128). */
export const BANK_OVERHEAD_BYTES = STORAGE.bankOverheadBytes
/** A queue slot at its largest: the queue's state, then a frame (firmware/queue-slot.ts slotValue). */
export const SLOT_BYTES = STORAGE.slotStateBytes + STORAGE.maxFrameBytes
/** Bytes of a bank the records may use. */
export const usableBankBytes = (bankBytes: number) => bankBytes - BANK_OVERHEAD_BYTES

/** Bytes a value's record takes in a bank: its entry plus the value aligned to 8 B (8 when empty). */
export const entryBytes = (valueBytes: number) =>
  (valueBytes === 0 ? 8 : Math.ceil(valueBytes / 8) * 8) + STORAGE.entryHeaderBytes

/** The bytes the runtime's own records take: Wi-Fi network and cloud link string at their longest, the program's entry. */
export const RUNTIME_RECORD_BYTES =
  Object.values(STORAGE.runtimeValueMaxBytes).reduce((s, n) => s + entryBytes(n), 0) +
  STORAGE.runtimeLargeKeys.length * STORAGE.entryHeaderBytes

/**
 * Bytes of the largest readings frame of `batch` intervals as a queue slot holds it: the Uplink
 * with every series at its worst case (storage.frameWorstCase), and when sealed, the 8-byte tag
 * (the slot's state in front of it, whose first byte says sealed or not, is storage.slotStateBytes). Encoded with the bridge's protobufjs code.
 */
export function worstFrameBytes(batch: number, sealed = true): number {
  const w = STORAGE.frameWorstCase
  const a = (v: number) => Array<number>(batch).fill(v)
  const readings = {
    startS: 2 ** 32 - 1,
    timeSynced: true,
    intervalS: TUNABLE_BY_NAME.intervalS.max,
    replayed: true,
    water: { totalMl: 2 ** 53, volumeMl: a(w.volumeMl), reverseMl: a(w.volumeMl) },
    electricity: {
      totalWh: 2 ** 53,
      energyWh: a(w.energyWh),
      powerW: a(-w.powerW),
      voltageDeltaDv: a(-w.voltageStepDv),
    },
    pressure: { avgPa: a(w.pressurePa), belowAvgPa: a(w.pressurePa), aboveAvgPa: a(w.pressurePa) },
  }
  const ids = { boot: 2 ** 32 - 1, seq: 2 ** 32 - 1 }
  if (!sealed) return citymeter.v1.Uplink.encode({ ...ids, readings }).finish().length
  const plain = citymeter.v1.ReadingBatch.encode(readings).finish().length
  return citymeter.v1.Uplink.encode({ ...ids, sealed: new Uint8Array(plain + TAG_BYTES) }).finish().length
}

/** The largest BATCH whose worst-case sealed frame fits one flash slot (proto/tunables.json BATCH max). */
export function maxBatchForSlot(): number {
  let n = 0
  while (worstFrameBytes(n + 1) <= STORAGE.maxFrameBytes) n++
  return n
}

/**
 * Bytes of JSON, at most, of each key the firmware or its provisioning may write besides the queue
 * slots: identity and broker (provisioned), the boot counter, the downlink replay mark, the sealing
 * key, and the calibrations of the pressure transducer and the metering IC. The tunables count at
 * their longest bound (TUNABLES).
 */
const OTHER_KEY_MAX_BYTES: Record<string, number> = {
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
  // calibrations (cli/provision.ts): P_CAL [mv0, pa0, mv1, pa1], ADE_CAL six gains and offsets
  P_CAL: 29,
  ADE_CAL: 56,
  // the ADE7953 probe period, s (cli/provision.ts ADE_RETRY_S: at most 3600)
  ADE_RETRY_S: 4,
}

/**
 * Every key the budget counts, as the store holds it (a program's settings with the settings
 * service's ':' in front, services/settings.c line 31), with its largest value in bytes (-1: a large
 * key, whose bytes are outside the bank).
 */
export function budgetedKeys(): Map<string, number> {
  const keys = new Map<string, number>()
  for (const [k, n] of Object.entries(OTHER_KEY_MAX_BYTES)) keys.set(`:${k}`, n)
  for (const t of TUNABLES) keys.set(`:${t.key}`, String(t.max).length)
  for (let i = 0; i < STORAGE.queueSlots; i++) keys.set(`:q${i}`, SLOT_BYTES)
  for (const k of STORAGE.retiredKeys) keys.set(`:${k}`, 0)
  for (const [k, n] of Object.entries(STORAGE.runtimeValueMaxBytes)) keys.set(k, n)
  for (const k of STORAGE.runtimeLargeKeys) keys.set(k, -1)
  return keys
}

export interface StorageBudget {
  /** The bank, bytes (boards/<board>.board.json $settingsBankBytes). */
  bankBytes: number
  /** What records may use of it: bankBytes - 48. */
  usableBytes: number
  slots: number
  maxFrameBytes: number
  /** A slot at its largest: the queue's state and the largest frame. */
  slotBytes: number
  /** The queue's slots at their largest. */
  queueBytes: number
  /** Every other record the firmware and its provisioning write, at its largest. */
  otherBytes: number
  /** The runtime's own records (Wi-Fi, the program's entry). */
  runtimeBytes: number
  /** Room a rewrite of the largest rewritten record needs while its old copy still counts. */
  gcHeadroomBytes: number
  /** usableBytes less all of the above; negative when it does not fit. */
  freeBytes: number
}

/**
 * Worst-case use of a settings bank: the full queue, every other key at its largest, the runtime's
 * records, and the headroom a rewrite of a queue slot (the largest record the firmware rewrites)
 * needs while its old copy counts.
 */
export function storageBudget(bankBytes: number, settings: Record<string, unknown> = {}): StorageBudget {
  const slots = STORAGE.queueSlots
  const maxFrameBytes = STORAGE.maxFrameBytes
  const queueBytes = slots * entryBytes(SLOT_BYTES)
  const keys: Record<string, number> = { ...OTHER_KEY_MAX_BYTES }
  for (const k of STORAGE.retiredKeys) keys[k] = 0
  for (const t of TUNABLES) keys[t.key] = String(t.max).length
  for (const [k, v] of Object.entries(settings)) keys[k] = Math.max(keys[k] ?? 0, Buffer.byteLength(JSON.stringify(v)))
  const otherBytes = Object.values(keys).reduce((s, n) => s + entryBytes(n), 0)
  // the slots are the only records rewritten in service
  const gcHeadroomBytes = entryBytes(SLOT_BYTES)
  const usableBytes = usableBankBytes(bankBytes)
  return {
    bankBytes,
    usableBytes,
    slots,
    maxFrameBytes,
    slotBytes: SLOT_BYTES,
    queueBytes,
    otherBytes,
    runtimeBytes: RUNTIME_RECORD_BYTES,
    gcHeadroomBytes,
    freeBytes: usableBytes - queueBytes - otherBytes - RUNTIME_RECORD_BYTES - gcHeadroomBytes,
  }
}

/** Frames the queue could hold on a bank: as many slots as fit next to everything else. */
export function queueCapacity(bankBytes: number, settings: Record<string, unknown> = {}): number {
  const b = storageBudget(bankBytes, settings)
  return Math.floor((b.usableBytes - b.otherBytes - b.runtimeBytes - b.gcHeadroomBytes) / entryBytes(b.slotBytes))
}

/** Why the queue and settings would overflow a board's bank, or undefined when they fit. */
export function queueFootprintError(
  board: string,
  bankBytes: number,
  settings: Record<string, unknown> = {},
): string | undefined {
  const b = storageBudget(bankBytes, settings)
  if (b.freeBytes >= 0) return undefined
  const need = b.queueBytes + b.otherBytes + b.runtimeBytes + b.gcHeadroomBytes
  return (
    `the flash queue (${b.slots} slots x ${entryBytes(b.slotBytes)} B = ${b.queueBytes} B), the other settings ` +
    `(${b.otherBytes} B), the runtime's Wi-Fi, cloud link and program records (${b.runtimeBytes} B) and the room a slot's rewrite ` +
    `needs (${b.gcHeadroomBytes} B) take ${need} B, over the ${b.usableBytes} B usable of the ${bankBytes} B settings ` +
    `bank of ${board}: DeviceScript's settings store would then refuse writes silently; lower storage.queueSlots in ` +
    `proto/tunables.json (at most ${queueCapacity(bankBytes, settings)} fit)`
  )
}

/** Why a BATCH would outgrow a flash slot, or undefined when its worst-case frame fits. */
export function batchSlotError(batch: number): string | undefined {
  const bytes = worstFrameBytes(batch)
  if (bytes <= STORAGE.maxFrameBytes) return undefined
  return (
    `BATCH=${batch}: a frame of ${batch} intervals can take ${bytes} B sealed, over the ${STORAGE.maxFrameBytes} B a flash ` +
    `slot holds for a frame; it would not be kept in flash until acknowledged (at most BATCH=${maxBatchForSlot()})`
  )
}

/**
 * Bytes of a board's settings bank: boards/<id>.board.json "$settingsBankBytes"; a board the
 * repository has no file for counts as the smallest bank of the known boards (the simulator's, the
 * Pico W's: 8192 B). cli/boards.ts settingsBankBytes also knows DeviceScript's built-ins.
 */
export const SIM_BANK_BYTES = 8192
export function boardBankBytes(board: string | null | undefined): number {
  const f = board && /^[A-Za-z0-9_]+$/.test(board) ? join(root, "boards", `${board}.board.json`) : undefined
  if (f && existsSync(f)) {
    const stated = (JSON.parse(readFileSync(f, "utf8")) as { $settingsBankBytes?: unknown }).$settingsBankBytes
    if (typeof stated === "number") return stated
  }
  return SIM_BANK_BYTES
}

/** The board ids of this repository (boards/<id>.board.json), sorted; none when there is no boards/. */
export function repoBoardIds(): string[] {
  const dir = join(root, "boards")
  if (!existsSync(dir)) return []
  return readdirSync(dir)
    .filter((f) => f.endsWith(".board.json"))
    .sort()
    .map((f) => f.slice(0, -".board.json".length))
}

/** The boards of this repository with their settings banks (boards/*.board.json). */
export function repoBoardBanks(): { board: string; bankBytes: number }[] {
  return repoBoardIds().map((board) => ({ board, bankBytes: boardBankBytes(board) }))
}
