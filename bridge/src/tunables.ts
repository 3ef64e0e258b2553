// The meter tunables of proto/tunables.json, for Node: the CLI (provision, sim), the bridge's
// Config downlink validation and the tests. The firmware gets its copy generated
// (scripts/gen-tunables.ts → firmware/gen/tunables.ts), and implements the same checks (firmware/config.ts).
// Pulse constants past the GPIO polling limit, and a BATCH or queue whose flash footprint
// would overflow the settings store, are refused at config time, with the reason.
import { existsSync, readFileSync, readdirSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import schema from "../../proto/tunables.json" with { type: "json" }
import { citymeter } from "./gen/citymeter.js"
import { TAG_BYTES } from "./seal.js"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..")

export interface Tunable {
  /** DeviceScript settings key (at most 13 characters). */
  key: string
  /** proto Config field, snake_case as in the .proto. */
  field: string
  /** The same field as protobufjs and the firmware name it (camelCase). */
  name: ConfigName
  default: number
  min: number
  max: number
  unit: string
  meaning: string
}

export type ConfigName =
  | "intervalS"
  | "batch"
  | "leakS"
  | "burstMlMin"
  | "backflowMl"
  | "noFlowS"
  | "pressureLowPa"
  | "pressureHighPa"
  | "undervoltageDv"
  | "supplyLossDv"
  | "pulsesPerL"
  | "impPerKwh"
  | "maxFlowLmin"
  | "maxPowerW"
  | "pulseMs"

/** snake_case → camelCase, as protobufjs names fields. */
export const camel = (snake: string) => snake.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase())

export const TUNABLES: readonly Tunable[] = schema.tunables.map((t) => ({ ...t, name: camel(t.field) as ConfigName }))
export const TUNABLE_BY_KEY: ReadonlyMap<string, Tunable> = new Map(TUNABLES.map((t) => [t.key, t]))
export const TUNABLE_BY_NAME = Object.fromEntries(TUNABLES.map((t) => [t.name, t])) as Record<ConfigName, Tunable>
export const STORAGE = schema.storage
export const GPIO_POLL_MS = schema.pulseInputs.gpioPollMs

/** Values by Config field name (camelCase); missing ones take their defaults. */
export type TunableValues = Record<ConfigName, number>
export const defaults = (): TunableValues =>
  Object.fromEntries(TUNABLES.map((t) => [t.name, t.default])) as TunableValues

// ---- pulse inputs

/** Pulses per second the 100 ms polling counts for pulses of `pulseMs`: one poll inside each pulse and each gap. */
export function maxPulseHz(pulseMs: number): number {
  return 1000 / (Math.max(pulseMs, GPIO_POLL_MS) + GPIO_POLL_MS)
}
/** Highest flow (L/min) a pulse constant can be counted at. */
export const maxCountableFlowLmin = (pulsesPerL: number, pulseMs: number) => (maxPulseHz(pulseMs) * 60) / pulsesPerL
/** Highest power (W) an S0 constant can be counted at. */
export const maxCountablePowerW = (impPerKwh: number, pulseMs: number) => (maxPulseHz(pulseMs) * 3.6e6) / impPerKwh

const round1 = (x: number) => Math.round(x * 10) / 10

/**
 * Why these pulse settings cannot be counted by GPIO polling, one sentence each; empty when they
 * can. The same rule as firmware/config.ts pulseLimitErrors (tests/tunables.test.ts compares them).
 */
export function pulseLimitErrors(
  v: Pick<TunableValues, "pulsesPerL" | "maxFlowLmin" | "impPerKwh" | "maxPowerW" | "pulseMs">,
): string[] {
  const out: string[] = []
  const poll = `GPIO inputs are polled every ${GPIO_POLL_MS} ms`
  if (v.pulseMs < GPIO_POLL_MS)
    out.push(
      `PULSE_MS=${v.pulseMs}: ${poll}, so a pulse shorter than ${GPIO_POLL_MS} ms is missed (count it with a hardware counter or a metering IC)`,
    )
  const hz = maxPulseHz(v.pulseMs)
  const flowHz = (v.pulsesPerL * v.maxFlowLmin) / 60
  if (flowHz > hz)
    out.push(
      `PULSES_PER_L=${v.pulsesPerL} at MAX_FLOW_LMIN=${v.maxFlowLmin} is ${round1(flowHz)} pulses/s; ${poll}, so at most ${round1(hz)} pulses/s of ${Math.max(v.pulseMs, GPIO_POLL_MS)} ms count (max ${round1(maxCountableFlowLmin(v.pulsesPerL, v.pulseMs))} L/min at this constant)`,
    )
  const s0Hz = (v.impPerKwh * v.maxPowerW) / 3.6e6
  if (s0Hz > hz)
    out.push(
      `IMP_PER_KWH=${v.impPerKwh} at MAX_POWER_W=${v.maxPowerW} is ${round1(s0Hz)} impulses/s; ${poll}, so at most ${round1(hz)}/s of ${Math.max(v.pulseMs, GPIO_POLL_MS)} ms count (max ${Math.floor(maxCountablePowerW(v.impPerKwh, v.pulseMs))} W at this constant)`,
    )
  return out
}

// ---- storage: the flash queue in the settings store

export const entryBytes = (valueBytes: number) => Math.ceil(valueBytes / 8) * 8 + STORAGE.entryHeaderBytes

/**
 * Bytes of the largest readings frame of `batch` intervals as a queue slot holds it: the Uplink
 * with every series at its worst case (storage.frameWorstCase), and when sealed, the 8-byte tag
 * plus the slot's kind byte (firmware/store.ts slotValue). Encoded with the bridge's protobufjs code.
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
  return 1 + citymeter.v1.Uplink.encode({ ...ids, sealed: new Uint8Array(plain + TAG_BYTES) }).finish().length
}

/** The largest BATCH whose worst-case sealed frame fits one flash slot (proto/tunables.json BATCH max). */
export function maxBatchForSlot(): number {
  let n = 0
  while (worstFrameBytes(n + 1) <= STORAGE.maxFrameBytes) n++
  return n
}

/**
 * The largest value each other key the firmware may write can hold, bytes of JSON: identity and
 * broker (provisioned), the boot counter, the downlink replay mark, the sealing key and the state
 * record (firmware/store.ts "st": ring positions, drop count, totals ≤ 2^53 each), the calibrations
 * of the pressure transducer and the metering IC. The tunables
 * count at their longest bound (TUNABLES).
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
  st: 9 * 22,
  // calibrations (cli/provision.ts): P_CAL [mv0, pa0, mv1, pa1], ADE_CAL six gains and offsets
  P_CAL: 29,
  ADE_CAL: 56,
}

export interface StorageBudget {
  bankBytes: number
  slots: number
  maxFrameBytes: number
  queueBytes: number
  otherBytes: number
  freeBytes: number
}

/** Worst-case use of a settings bank: the full queue plus every other key at its largest. */
export function storageBudget(bankBytes: number, settings: Record<string, unknown> = {}): StorageBudget {
  const slots = STORAGE.queueSlots
  const maxFrameBytes = STORAGE.maxFrameBytes
  const queueBytes = slots * entryBytes(maxFrameBytes)
  const keys: Record<string, number> = { ...OTHER_KEY_MAX_BYTES }
  for (const t of TUNABLES) keys[t.key] = String(t.max).length
  for (const [k, v] of Object.entries(settings)) keys[k] = Math.max(keys[k] ?? 0, Buffer.byteLength(JSON.stringify(v)))
  const otherBytes = Object.values(keys).reduce((s, n) => s + entryBytes(n), 0)
  return { bankBytes, slots, maxFrameBytes, queueBytes, otherBytes, freeBytes: bankBytes - queueBytes - otherBytes }
}

/** Frames the queue holds on a bank: as many slots as fit next to the other settings. */
export const queueCapacity = (bankBytes: number) =>
  Math.floor((bankBytes - storageBudget(bankBytes).otherBytes) / entryBytes(STORAGE.maxFrameBytes))

/** Why the queue and settings would overflow a board's bank, or undefined when they fit. */
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
    `DeviceScript's settings store would then fail silently; lower storage.queueSlots in proto/tunables.json`
  )
}

/** Why a BATCH would outgrow a flash slot, or undefined when its worst-case frame fits. */
export function batchSlotError(batch: number): string | undefined {
  const bytes = worstFrameBytes(batch)
  if (bytes <= STORAGE.maxFrameBytes) return undefined
  return (
    `BATCH=${batch}: a frame of ${batch} intervals can take ${bytes} B sealed, over the ${STORAGE.maxFrameBytes} B flash ` +
    `slot; it would not be kept in flash until acknowledged (at most BATCH=${maxBatchForSlot()})`
  )
}

/**
 * Bytes of a board's settings bank: boards/<id>.board.json "$settingsBankBytes"; a board the
 * repository has no file for counts as the smallest bank of the known boards (the simulator's
 * 8144 B is smaller than any of them). cli/boards.ts settingsBankBytes also knows DeviceScript's built-ins.
 */
export const SIM_BANK_BYTES = 8144
export function boardBankBytes(board: string | null | undefined): number {
  const f = board && /^[A-Za-z0-9_]+$/.test(board) ? join(root, "boards", `${board}.board.json`) : undefined
  if (f && existsSync(f)) {
    const stated = (JSON.parse(readFileSync(f, "utf8")) as { $settingsBankBytes?: unknown }).$settingsBankBytes
    if (typeof stated === "number") return stated
  }
  return SIM_BANK_BYTES
}

// ---- one check for every consumer

/**
 * Everything wrong with a set of tunable values: out of bounds, pulses the polling cannot count, a
 * BATCH that outgrows a flash slot, and, given a board (null: unknown), a queue over its bank.
 */
export function tunableErrors(v: TunableValues, board?: string | null): string[] {
  const out: string[] = []
  for (const t of TUNABLES) {
    const x = v[t.name]
    if (!Number.isInteger(x) || x < t.min || x > t.max)
      out.push(`${t.key} must be an integer in ${t.min}..${t.max} ${t.unit} (got ${x})`)
  }
  if (out.length) return out
  out.push(...pulseLimitErrors(v))
  const slot = batchSlotError(v.batch)
  if (slot) out.push(slot)
  if (board !== undefined) {
    const bank = queueFootprintError(board ?? "an unknown board", boardBankBytes(board))
    if (bank) out.push(bank)
  }
  return out
}

/** The boards of this repository with their settings banks (boards/*.board.json). */
export function repoBoardBanks(): { board: string; bankBytes: number }[] {
  return readdirSync(join(root, "boards"))
    .filter((f) => f.endsWith(".board.json"))
    .sort()
    .map((f) => f.slice(0, -".board.json".length))
    .map((board) => ({ board, bankBytes: boardBankBytes(board) }))
}

/** The README's tunables table and the limits that follow (npm run gen writes it between the markers). */
export const README_BEGIN = "<!-- tunables:begin (generated from proto/tunables.json by npm run gen) -->"
export const README_END = "<!-- tunables:end -->"
export function readmeTable(): string {
  const rows = TUNABLES.map(
    (t) => `| \`${t.key}\` | \`${t.field}\` | ${t.default} | ${t.min}..${t.max} | ${t.unit} | ${t.meaning} |`,
  )
  const ms = TUNABLE_BY_NAME.pulseMs.default
  const flows = [1, 10, 450].map((k) => `${k} pulse(s)/L up to ${round1(maxCountableFlowLmin(k, ms))} L/min`)
  const powers = [1000, 10000].map((k) => `${k} imp/kWh up to ${Math.floor(maxCountablePowerW(k, ms))} W`)
  const batches = Array.from({ length: TUNABLE_BY_NAME.batch.max + 1 }, (_, i) => worstFrameBytes(i + 1))
  const b = storageBudget(SIM_BANK_BYTES)
  const banks = [...repoBoardBanks(), { board: "simulator", bankBytes: SIM_BANK_BYTES }].map(
    ({ board, bankBytes }) =>
      `${board} ${bankBytes} B (${storageBudget(bankBytes).freeBytes} B free; ${queueCapacity(bankBytes)} slots would fit)`,
  )
  return [
    README_BEGIN,
    "| setting | proto Config field | default | bounds | unit | meaning |",
    "|---|---|---|---|---|---|",
    ...rows,
    "",
    `- Pulses of ${ms} ms: at most ${round1(maxPulseHz(ms))} pulses/s count; ${flows.join(", ")}; ${powers.join(", ")}.`,
    `- Worst-case sealed readings frame for BATCH = 1..${batches.length}: ${batches.join(", ")} B; a flash slot holds ${STORAGE.maxFrameBytes} B.`,
    `- Queue: ${b.slots} slots x ${entryBytes(b.maxFrameBytes)} B = ${b.queueBytes} B, plus ${b.otherBytes} B for every other setting at its largest; settings banks: ${banks.join(", ")}.`,
    README_END,
  ].join("\n")
}
