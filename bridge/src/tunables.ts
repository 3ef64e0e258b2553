// The meter tunables of proto/tunables.json, for Node: the CLI (provision, sim), the bridge's
// Config downlink validation and the tests. The firmware gets its copy generated
// (scripts/gen-tunables.ts → firmware/gen/tunables.ts), and implements the same checks (firmware/config.ts).
// Pulse constants past the board's pulse input limits, and a BATCH or queue whose flash footprint
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
/** How often a board's button service samples a pulse pin in C (jacdac-c services/button.c). */
export const PULSE_SAMPLE_MS = schema.pulseInputs.sampleMs

/** Values by Config field name (camelCase); missing ones take their defaults. */
export type TunableValues = Record<ConfigName, number>
export const defaults = (): TunableValues =>
  Object.fromEntries(TUNABLES.map((t) => [t.name, t.default])) as TunableValues

// ---- pulse inputs: counted from button services sampling the pins in C (firmware/pulses.ts)

export interface PulseLimits {
  /** Shortest pulse, and shortest gap between pulses, counted, ms. */
  minPulseMs: number
  /** Highest rate counted (pulses of minPulseMs), per second. */
  maxPulseHz: number
  /** How the figures were found: measured (and how) or derived. */
  source: string
}
/** Each board's pulse input limits (proto/tunables.json pulseInputs.boards). */
export const PULSE_LIMITS: Readonly<Record<string, PulseLimits>> = schema.pulseInputs.boards
/** The limits of a board without figures of its own (unknown, the simulator): the strictest of all. */
export const STRICTEST_PULSE_LIMITS: PulseLimits = {
  minPulseMs: Math.max(...Object.values(PULSE_LIMITS).map((l) => l.minPulseMs)),
  maxPulseHz: Math.min(...Object.values(PULSE_LIMITS).map((l) => l.maxPulseHz)),
  source: "the strictest of the boards' figures",
}
/** A board's pulse input limits; an unknown board (or none) gets the strictest. */
export const pulseLimitsOf = (board?: string | null): PulseLimits =>
  (board && Object.hasOwn(PULSE_LIMITS, board) ? PULSE_LIMITS[board] : undefined) ?? STRICTEST_PULSE_LIMITS

/** Pulses per second a board counts for pulses of `pulseMs`: a sample inside each pulse and each gap. */
export function maxPulseHz(pulseMs: number, board?: string | null): number {
  const l = pulseLimitsOf(board)
  return Math.min(l.maxPulseHz, 1000 / (Math.max(pulseMs, l.minPulseMs) + l.minPulseMs))
}
/** Highest flow (L/min) a pulse constant can be counted at. */
export const maxCountableFlowLmin = (pulsesPerL: number, pulseMs: number, board?: string | null) =>
  (maxPulseHz(pulseMs, board) * 60) / pulsesPerL
/** Highest power (W) an S0 constant can be counted at. */
export const maxCountablePowerW = (impPerKwh: number, pulseMs: number, board?: string | null) =>
  (maxPulseHz(pulseMs, board) * 3.6e6) / impPerKwh

const round1 = (x: number) => Math.round(x * 10) / 10

/**
 * Why these pulse settings cannot be counted on `board` (unknown: the strictest board), one
 * sentence each; empty when they can. The same rule as firmware/config.ts pulseLimitErrors
 * (tests/unit/tunables.test.ts compares them).
 */
export function pulseLimitErrors(
  v: Pick<TunableValues, "pulsesPerL" | "maxFlowLmin" | "impPerKwh" | "maxPowerW" | "pulseMs">,
  board?: string | null,
): string[] {
  const out: string[] = []
  const l = pulseLimitsOf(board)
  const on = board && Object.hasOwn(PULSE_LIMITS, board) ? board : "every board"
  if (v.pulseMs < l.minPulseMs)
    out.push(
      `PULSE_MS=${v.pulseMs}: ${on} counts pulses of at least ${l.minPulseMs} ms (its pins are sampled every ${PULSE_SAMPLE_MS} ms), shorter ones are missed (count them with a hardware counter or a metering IC)`,
    )
  const hz = maxPulseHz(v.pulseMs, board)
  const width = Math.max(v.pulseMs, l.minPulseMs)
  const flowHz = (v.pulsesPerL * v.maxFlowLmin) / 60
  if (flowHz > hz)
    out.push(
      `PULSES_PER_L=${v.pulsesPerL} at MAX_FLOW_LMIN=${v.maxFlowLmin} is ${round1(flowHz)} pulses/s; ${on} counts at most ${round1(hz)} pulses/s of ${width} ms (max ${round1(maxCountableFlowLmin(v.pulsesPerL, v.pulseMs, board))} L/min at this constant)`,
    )
  const s0Hz = (v.impPerKwh * v.maxPowerW) / 3.6e6
  if (s0Hz > hz)
    out.push(
      `IMP_PER_KWH=${v.impPerKwh} at MAX_POWER_W=${v.maxPowerW} is ${round1(s0Hz)} impulses/s; ${on} counts at most ${round1(hz)}/s of ${width} ms (max ${Math.floor(maxCountablePowerW(v.impPerKwh, v.pulseMs, board))} W at this constant)`,
    )
  return out
}

// ---- storage: the flash queue in the settings store
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
//     `wifi_psk`, network/wifi.c lines 171-172) and the program's entry `*prog`, whose bytes live
//     in the data pages after the banks (only its 24 B entry is in the bank, lines 254, 369-405).

/** Bytes a bank's header and the empty entry that ends its list take (jd_fstor.c lines 36-48, 128). */
export const BANK_OVERHEAD_BYTES = STORAGE.bankOverheadBytes
/** A queue slot at its largest: the queue's state, then a frame (firmware/store.ts slotValue). */
export const SLOT_BYTES = STORAGE.slotStateBytes + STORAGE.maxFrameBytes
/** Bytes of a bank the records may use. */
export const usableBankBytes = (bankBytes: number) => bankBytes - BANK_OVERHEAD_BYTES

/** Bytes a value's record takes in a bank: its entry plus the value aligned to 8 B (8 when empty). */
export const entryBytes = (valueBytes: number) =>
  (valueBytes === 0 ? 8 : Math.ceil(valueBytes / 8) * 8) + STORAGE.entryHeaderBytes

/** The bytes the runtime's own records take: the Wi-Fi network at its longest and the program's entry. */
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
    `(${b.otherBytes} B), the runtime's Wi-Fi and program records (${b.runtimeBytes} B) and the room a slot's rewrite ` +
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
  out.push(...pulseLimitErrors(v, board))
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
      `${board} ${bankBytes} B, ${usableBankBytes(bankBytes)} B usable (${storageBudget(bankBytes).freeBytes} B spare; ${queueCapacity(bankBytes)} slots would fit)`,
  )
  return [
    README_BEGIN,
    "| setting | proto Config field | default | bounds | unit | meaning |",
    "|---|---|---|---|---|---|",
    ...rows,
    "",
    `- Pulse inputs (sampled in C every ${PULSE_SAMPLE_MS} ms): ${Object.entries(PULSE_LIMITS)
      .map(([board, l]) => `${board} counts pulses and gaps of at least ${l.minPulseMs} ms, at most ${l.maxPulseHz}/s`)
      .join(
        "; ",
      )}. Pulses of ${ms} ms: at most ${round1(maxPulseHz(ms))} pulses/s count; ${flows.join(", ")}; ${powers.join(", ")}.`,
    `- Worst-case sealed readings frame for BATCH = 1..${batches.length}: ${batches.join(", ")} B; a flash slot holds ${STORAGE.slotStateBytes} B of the queue's state and a frame of ${STORAGE.maxFrameBytes} B.`,
    `- Queue: ${b.slots} slots x ${entryBytes(b.slotBytes)} B = ${b.queueBytes} B, plus ${b.otherBytes} B for every other setting at its largest, ${b.runtimeBytes} B for the runtime's Wi-Fi and program records and ${b.gcHeadroomBytes} B of room to rewrite a slot; settings banks: ${banks.join(", ")}.`,
    README_END,
  ].join("\n")
}
