// Uplink decoding and validation: bytes → a checked domain frame, or a FrameError with a stable code.
import { citymeter } from "./gen/citymeter.js"
import { downlinkClearNonce, downlinkNonce, open, seal, uplinkNonce } from "./seal.js"
import { PLAUSIBLE } from "./bounds.js"
import protobuf from "protobufjs/minimal.js"
import { DOWN_KINDS, UP_KINDS, type DownKind, type UpKind } from "./topics.js"

const { Uplink, Downlink, AlarmType, Channel } = citymeter.v1

export const MAX_PAYLOAD_BYTES = 4096
export const MAX_INTERVALS = 96
export const MAX_INTERVAL_S = 86400
/** A synced timestamp further ahead of the bridge's clock than this is clock skew. */
export const MAX_FUTURE_SKEW_S = 600
/** No citymeter reading predates 2020-01-01: an older synced time is a wrong clock or a corrupt frame. */
export const MIN_SYNCED_S = 1_577_836_800
/** Birth firmware and board strings: printable ASCII, at most this long. */
export const MAX_LABEL_CHARS = 64
/** An alarm's measured value, in its rule's unit (mL, mL/min, s, Pa, dV): at most this in magnitude. */
export const MAX_ALARM_VALUE = 1e12

/**
 * Why a frame was not stored. Each is counted (citymeter_frames_rejected_total{reason}), logged
 * with the meter and kept as a dead letter; README "No reading lost" says what happens to each.
 */
export const REJECT_REASONS = {
  CM_ERR_TOPIC: "not a citymeter/v1/<meter>/up/<kind> topic, or a meter id outside the grammar",
  CM_ERR_OVERSIZE: `payload larger than ${MAX_PAYLOAD_BYTES} bytes`,
  CM_ERR_DECODE: "not a citymeter.v1.Uplink",
  CM_ERR_NONCANONICAL: "decodes, but is not the canonical encoding the firmware writes (unknown fields, bit flips)",
  CM_ERR_SEAL: "a sealed frame whose tag does not verify under the meter's key (forged, bit-flipped), or no key",
  CM_ERR_UNSEALED: "an open (unsealed) frame from a meter whose policy is sealed",
  CM_ERR_REPLAY: "a birth of a connection older than the meter's last birth (a replay)",
  CM_ERR_KIND_MISMATCH: "the envelope's body is not the topic's kind",
  CM_ERR_SERIES: "series lengths differ, or no or too many intervals",
  CM_ERR_INTERVAL: `interval_s outside 1..${MAX_INTERVAL_S}`,
  CM_ERR_FIELD: "a value outside what its field, its column or the physics of its channel allow",
  CM_ERR_SEQ: "seq missing, or beyond what the meter can have counted since its birth",
  CM_ERR_BOOT: "boot ahead of the meter's last birth, or an implausible jump",
  CM_ERR_CLOCK_SKEW: "a synced time in the future or before 2020",
  CM_ERR_UNKNOWN_METER: "the meter is not in the registry (production mode)",
  CM_ERR_CONFLICT: "same (meter, boot, seq) as a stored frame, different content",
  CM_ERR_STALE_DEATH: "a death from an earlier boot than the meter's last birth, or an empty one",
  CM_ERR_STORE_REFUSED: "the data tier refused the frame's content (not an outage)",
} as const

export type RejectCode = keyof typeof REJECT_REASONS

export class FrameError extends Error {
  constructor(
    readonly code: RejectCode,
    message: string,
  ) {
    super(message)
  }
}

export interface IntervalValues {
  volumeMl?: number
  reverseMl?: number
  energyWh?: number
  powerW?: number
  voltageDv?: number
  pressureMinPa?: number
  pressureAvgPa?: number
  pressureMaxPa?: number
}

export interface ReadingsFrame {
  kind: "readings"
  boot: number
  seq: number
  startS: number
  timeSynced: boolean
  intervalS: number
  replayed: boolean
  /** proto ReadingBatch.after_reboot: the meter's first frame after it started. */
  afterReboot: boolean
  waterTotalMl?: number
  energyTotalWh?: number
  intervals: IntervalValues[]
}
export interface BirthFrame {
  kind: "birth"
  /** proto Birth.channels and alarm_rules, by enum name (empty from firmware that predates them). */
  channels: string[]
  alarmRules: string[]
  boot: number
  seq: number
  firmware: string
  board: string
  intervalS: number
  batch: number
  waterTotalMl: number
  energyTotalWh: number
  queued: number
  dropped: number
  /** proto Birth.unstored: flash writes the meter's store refused since boot (frames in its RAM only). */
  unstored: number
  uptimeS: number
}
export interface AlarmFrame {
  kind: "alarm"
  boot: number
  seq: number
  type: string
  active: boolean
  timeS: number
  timeSynced: boolean
  value: number
}
export interface DeathFrame {
  kind: "death"
  boot: number
}
/** What every decoded frame carries besides its body. */
export interface FrameMeta {
  /** Births and deaths: the connection of this boot (proto Uplink.link). */
  link: number
  /** Index of the key that verified the seal (0: the key in force, 1: the next one), or null when open. */
  keyIndex: number | null
}
export type UplinkFrame = (ReadingsFrame | BirthFrame | AlarmFrame | DeathFrame) & FrameMeta

/** How a meter's frames are sealed (the registry's policy and keys). */
export interface SealContext {
  policy: "sealed" | "open"
  /** The key in force, then the next one while a rotation is unconfirmed. */
  keys: Uint8Array[]
}

/** A decoded scalar as a number; 64-bit fields decode as Long (Number() of a Long goes through its decimal string). */
const num = (v: unknown): number =>
  v === undefined || v === null
    ? 0
    : typeof v === "number"
      ? v
      : typeof (v as { toNumber?: unknown }).toNumber === "function"
        ? (v as { toNumber(): number }).toNumber()
        : Number(v)

/** An integer in lo..hi. */
const within = (v: number, lo: number, hi: number) => Number.isInteger(v) && v >= lo && v <= hi

const field = (name: string, v: number, lo: number, hi: number) => {
  if (!within(v, lo, hi)) throw new FrameError("CM_ERR_FIELD", `${name} ${v} outside ${lo}..${hi}`)
  return v
}

function label(name: string, v: string | null | undefined): string {
  const s = v ?? ""
  if (s.length > MAX_LABEL_CHARS || !/^[\x20-\x7e]*$/.test(s))
    throw new FrameError("CM_ERR_FIELD", `${name} must be at most ${MAX_LABEL_CHARS} printable ASCII characters`)
  return s
}

function series(name: string, values: number[] | null | undefined, n: number): number[] | undefined {
  if (!values || values.length === 0) return undefined
  if (values.length !== n) throw new FrameError("CM_ERR_SERIES", `${name} has ${values.length} entries, expected ${n}`)
  // 32-bit fields decode as numbers: the decoded array itself, not a copy
  for (let i = 0; i < n; i++) if (typeof values[i] !== "number") return values.map(Number)
  return values
}

/** proto ElectricitySeries.voltage_delta_dv: the first value, then changes. */
function undelta(d: number[] | undefined): number[] | undefined {
  if (!d) return undefined
  let v = 0
  return d.map((x) => (v += x))
}

function syncedTime(name: string, s: number, nowS: number) {
  if (s > nowS + MAX_FUTURE_SKEW_S)
    throw new FrameError("CM_ERR_CLOCK_SKEW", `${name} ${s} is ${s - nowS} s ahead of the bridge`)
  if (s < MIN_SYNCED_S) throw new FrameError("CM_ERR_CLOCK_SKEW", `${name} ${s} is before 2020`)
}

/**
 * Shortest window the rate bounds are applied over. Intervals shorter than the usual 15 minutes
 * (DLMS load profiles: 15 or 30 min) are bounded as if they lasted 15 minutes, so time-compressed
 * simulations (a day in minutes) stay plausible; at 15 minutes and more the bound is exact.
 */
export const MIN_RATE_WINDOW_S = 900

/**
 * Per-interval amounts bounded by rate: what the channel can pass in the interval at its physical
 * maximum (bounds.ts PLAUSIBLE). Column and register bounds are checked on the rows
 * (store/columns.ts outOfRange), so every value is checked once against one description.
 */
function checkRates(f: ReadingsFrame) {
  const windowS = Math.max(f.intervalS, MIN_RATE_WINDOW_S)
  const maxVolume = windowS * PLAUSIBLE.flowMlPerS
  const maxEnergy = Math.ceil((windowS * PLAUSIBLE.powerW) / 3600)
  // field() names the value only for a frame that fails (no string per value per frame)
  for (let i = 0; i < f.intervals.length; i++) {
    const v = f.intervals[i]
    if (v.volumeMl !== undefined && !within(v.volumeMl, 0, maxVolume))
      field(`water.volume_ml[${i}]`, v.volumeMl, 0, maxVolume)
    if (v.reverseMl !== undefined && !within(v.reverseMl, 0, maxVolume))
      field(`water.reverse_ml[${i}]`, v.reverseMl, 0, maxVolume)
    if (v.energyWh !== undefined && !within(v.energyWh, 0, maxEnergy))
      field(`electricity.energy_wh[${i}]`, v.energyWh, 0, maxEnergy)
    if (v.pressureMinPa !== undefined && !within(v.pressureMinPa, 0, PLAUSIBLE.pressurePa))
      field(`pressure.avg_pa - below_avg_pa [${i}]`, v.pressureMinPa, 0, PLAUSIBLE.pressurePa)
  }
}

function decodeReadings(u: citymeter.v1.Uplink, nowS: number, meta: FrameMeta): ReadingsFrame & FrameMeta {
  const r = u.readings!
  const intervalS = num(r.intervalS)
  if (intervalS < 1 || intervalS > MAX_INTERVAL_S)
    throw new FrameError("CM_ERR_INTERVAL", `interval_s ${intervalS} outside 1..${MAX_INTERVAL_S}`)
  if (!u.seq) throw new FrameError("CM_ERR_SEQ", "readings frame without seq")
  const n = Math.max(
    r.water?.volumeMl?.length ?? 0,
    r.electricity?.energyWh?.length ?? 0,
    r.pressure?.avgPa?.length ?? 0,
  )
  if (n === 0) throw new FrameError("CM_ERR_SERIES", "readings frame without intervals")
  if (n > MAX_INTERVALS) throw new FrameError("CM_ERR_SERIES", `${n} intervals, at most ${MAX_INTERVALS}`)
  const startS = num(r.startS)
  if (r.timeSynced) syncedTime("start_s", startS, nowS)
  const volume = series("water.volume_ml", r.water?.volumeMl, n)
  const reverse = series("water.reverse_ml", r.water?.reverseMl, n)
  const energy = series("electricity.energy_wh", r.electricity?.energyWh, n)
  const power = series("electricity.power_w", r.electricity?.powerW, n)
  const voltage =
    series("electricity.voltage_dv", r.electricity?.voltageDv, n) ??
    undelta(series("electricity.voltage_delta_dv", r.electricity?.voltageDeltaDv, n))
  if (r.electricity?.voltageDv?.length && r.electricity?.voltageDeltaDv?.length)
    throw new FrameError("CM_ERR_SERIES", "both voltage_dv and voltage_delta_dv")
  const avg = series("pressure.avg_pa", r.pressure?.avgPa, n)
  const below = series("pressure.below_avg_pa", r.pressure?.belowAvgPa, n)
  const above = series("pressure.above_avg_pa", r.pressure?.aboveAvgPa, n)
  const intervals: IntervalValues[] = []
  for (let i = 0; i < n; i++) {
    const v: IntervalValues = {}
    if (volume) v.volumeMl = volume[i]
    if (volume || reverse) v.reverseMl = reverse?.[i] ?? 0
    if (energy) v.energyWh = energy[i]
    if (power) v.powerW = power[i]
    if (voltage) v.voltageDv = voltage[i]
    if (avg) {
      v.pressureAvgPa = avg[i]
      v.pressureMinPa = avg[i] - (below?.[i] ?? 0)
      v.pressureMaxPa = avg[i] + (above?.[i] ?? 0)
    }
    intervals.push(v)
  }
  const frame: ReadingsFrame & FrameMeta = {
    kind: "readings",
    boot: num(u.boot),
    seq: num(u.seq),
    startS,
    timeSynced: !!r.timeSynced,
    intervalS,
    replayed: !!r.replayed,
    afterReboot: !!r.afterReboot,
    waterTotalMl: r.water ? num(r.water.totalMl) : undefined,
    energyTotalWh: r.electricity ? num(r.electricity.totalWh) : undefined,
    intervals,
    link: meta.link,
    keyIndex: meta.keyIndex,
  }
  checkRates(frame)
  return frame
}

function decodeBirth(u: citymeter.v1.Uplink): BirthFrame {
  const b = u.birth!
  return {
    kind: "birth",
    boot: num(u.boot),
    seq: num(u.seq),
    firmware: label("birth.firmware", b.firmware),
    board: label("birth.board", b.board),
    intervalS: field("birth.interval_s", num(b.intervalS), 1, MAX_INTERVAL_S),
    batch: field("birth.batch", num(b.batch), 1, MAX_INTERVALS),
    waterTotalMl: field("birth.water_total_ml", num(b.waterTotalMl), 0, PLAUSIBLE.waterTotalMl),
    energyTotalWh: field("birth.energy_total_wh", num(b.energyTotalWh), 0, PLAUSIBLE.energyTotalWh),
    queued: num(b.queued),
    dropped: num(b.dropped),
    unstored: num(b.unstored),
    uptimeS: num(b.uptimeS),
    channels: enumNames("birth.channels", b.channels, Channel),
    alarmRules: enumNames("birth.alarm_rules", b.alarmRules, AlarmType),
  }
}

/** A repeated enum as names; an unknown, unspecified or repeated value is a bad frame. */
function enumNames(name: string, values: number[] | null | undefined, e: Record<number, string>): string[] {
  const out: string[] = []
  for (const v of values ?? []) {
    const n = e[v]
    if (!v || n === undefined || out.includes(n)) throw new FrameError("CM_ERR_FIELD", `${name} holds ${v}`)
    out.push(n)
  }
  return out
}

function decodeAlarm(u: citymeter.v1.Uplink, nowS: number): AlarmFrame {
  const a = u.alarm!
  const type = a.type ?? 0
  // Names, never numbers (proto AlarmType); an unknown or unspecified type is not an alarm.
  if (type === AlarmType.ALARM_TYPE_UNSPECIFIED || AlarmType[type] === undefined)
    throw new FrameError("CM_ERR_FIELD", `alarm.type ${type} is not an AlarmType`)
  if (!u.seq) throw new FrameError("CM_ERR_SEQ", "alarm frame without seq")
  const timeS = num(a.timeS)
  if (a.timeSynced) syncedTime("alarm.time_s", timeS, nowS)
  return {
    kind: "alarm",
    boot: num(u.boot),
    seq: num(u.seq),
    type: AlarmType[type],
    active: !!a.active,
    timeS,
    timeSynced: !!a.timeSynced,
    value: field("alarm.value", num(a.value), -MAX_ALARM_VALUE, MAX_ALARM_VALUE),
  }
}

/**
 * Decodes and validates one uplink payload received on a topic of the given kind. Every byte is
 * hostile until checked: the size, the structure (protobufjs), the encoding (it must be exactly
 * the canonical bytes the firmware writes: protobufjs skips unknown fields and accepts
 * non-minimal varints, so a bit-flipped frame often still decodes), the kind, and every value.
 */
export function decodeUplink(
  kind: UpKind,
  payload: Uint8Array,
  nowS = Date.now() / 1000,
  seal: SealContext = { policy: "open", keys: [] },
): UplinkFrame {
  return openEnvelope(readEnvelope(kind, payload), nowS, seal)
}

/**
 * An uplink's envelope: read once, before the meter's keys are known (ingest reads it on arrival
 * and opens it against the meter's row later).
 */
export interface UplinkEnvelope {
  kind: UpKind
  uplink: citymeter.v1.Uplink
  /** A will with no payload at all. */
  empty: boolean
}

/** decodeUplink's first half: the size, the structure and the canonical encoding. */
export function readEnvelope(kind: UpKind, payload: Uint8Array): UplinkEnvelope {
  if (payload.length > MAX_PAYLOAD_BYTES)
    throw new FrameError("CM_ERR_OVERSIZE", `${payload.length} bytes, at most ${MAX_PAYLOAD_BYTES}`)
  return { kind, uplink: decodeCanonical(payload), empty: payload.length === 0 }
}

/** The envelope's (boot, seq) in clear (sealed frames carry them too); undefined without a seq. */
export function envelopeId(e: UplinkEnvelope): { boot: number; seq: number } | undefined {
  return e.uplink.seq ? { boot: num(e.uplink.boot), seq: num(e.uplink.seq) } : undefined
}

/** decodeUplink's second half: the seal under the meter's keys, the kind, and every value. */
export function openEnvelope(envelope: UplinkEnvelope, nowS: number, seal: SealContext): UplinkFrame {
  const { kind } = envelope
  let u = envelope.uplink
  let keyIndex: number | null = null
  if (u.body === "sealed") [u, keyIndex] = unseal(kind, u, seal)
  else if (seal.policy === "sealed")
    throw new FrameError("CM_ERR_UNSEALED", `an open ${u.body ?? "empty"} frame; this meter's frames must be sealed`)
  const meta: FrameMeta = { link: num(u.link), keyIndex }
  // A will with no payload at all reads as a death of boot 0 (stale, for ingest); any other frame
  // needs its body: `08 01` alone (a boot and nothing else) is no death, nor is a downlink.
  const body = u.body ?? (kind === "death" && envelope.empty ? "death" : undefined)
  if (body !== kind) throw new FrameError("CM_ERR_KIND_MISMATCH", `body ${body ?? "none"} on an up/${kind} topic`)
  switch (body) {
    case "readings":
      return decodeReadings(u, nowS, meta)
    case "birth":
      return { ...decodeBirth(u), ...meta }
    case "alarm":
      return { ...decodeAlarm(u, nowS), ...meta }
    default:
      // An empty will payload decodes as a death of boot 0: ingest treats it as stale.
      return { kind: "death", boot: num(u.boot), ...meta }
  }
}

function decodeCanonical(payload: Uint8Array): citymeter.v1.Uplink {
  let u: citymeter.v1.Uplink
  try {
    u = Uplink.decode(payload)
  } catch (e) {
    throw new FrameError("CM_ERR_DECODE", `not a citymeter.v1.Uplink: ${(e as Error).message}`)
  }
  if (!isCanonical(u, payload))
    throw new FrameError("CM_ERR_NONCANONICAL", `${payload.length} bytes decode, but are not their canonical encoding`)
  return u
}

/**
 * Opens a sealed frame with the meter's keys; the nonce binds the topic's kind and the clear boot,
 * seq and link. The plaintext must be exactly an Uplink holding the body, nothing else.
 */
function unseal(kind: UpKind, outer: citymeter.v1.Uplink, ctx: SealContext): [citymeter.v1.Uplink, number] {
  if (ctx.keys.length === 0)
    throw new FrameError("CM_ERR_SEAL", "a sealed frame, and the registry has no key for this meter")
  const [boot, seq, link] = [num(outer.boot), num(outer.seq), num(outer.link)]
  const nonce = uplinkNonce(kind, boot, seq, link)
  for (let i = 0; i < ctx.keys.length; i++) {
    const plain = open(ctx.keys[i], nonce, outer.sealed!)
    if (!plain) continue
    // the plaintext is the body message of the topic's kind, canonical like any frame
    const inner = decodeCanonical(wrapBody(kind, plain))
    inner.boot = boot
    inner.seq = seq
    inner.link = link
    return [inner, i]
  }
  throw new FrameError("CM_ERR_SEAL", `the tag does not verify under the meter's key${ctx.keys.length > 1 ? "s" : ""}`)
}

/** The Uplink that carries `body` as its `kind` (field number + length + bytes). */
function wrapBody(kind: UpKind, body: Uint8Array): Uint8Array {
  const w = protobuf.Writer.create()
  w.uint32((BODY_FIELD[kind] << 3) | 2).bytes(body)
  return w.finish()
}
const BODY_FIELD: Record<UpKind, number> = { readings: 10, birth: 11, alarm: 12, death: 13 }

function isCanonical(u: citymeter.v1.Uplink, payload: Uint8Array): boolean {
  const again = Uplink.encode(u).finish()
  return again.length === payload.length && Buffer.compare(again, payload) === 0
}

export function encodeDownlink(d: citymeter.v1.Downlink.$Properties, key?: Uint8Array): Uint8Array {
  if (!key) return Downlink.encode(Downlink.fromObject(d)).finish()
  const kind = DOWN_KINDS.find((k) => d[k] !== undefined && d[k] !== null)
  if (!kind) throw new Error("a downlink needs a body")
  return sealDownlinkBody(key, kind, d[kind]!, downlinkClearNonce())
}

const DOWN_BODY = {
  ack: citymeter.v1.Ack,
  time: citymeter.v1.TimeSync,
  config: citymeter.v1.Config,
  resend: citymeter.v1.Resend,
}

/** A sealed Downlink: the body message of `kind` sealed under `key` with the given clear nonce. */
export function sealDownlinkBody(key: Uint8Array, kind: DownKind, body: object, clear: Uint8Array): Uint8Array {
  const type = DOWN_BODY[kind] as unknown as { encode(m: object): protobuf.Writer; fromObject(o: object): object }
  const plain = type.encode(type.fromObject(body)).finish()
  return Downlink.encode({ sealed: seal(key, downlinkNonce(kind, clear), plain), nonce: clear }).finish()
}

const UP_BODY = {
  readings: citymeter.v1.ReadingBatch,
  birth: citymeter.v1.Birth,
  alarm: citymeter.v1.Alarm,
  death: citymeter.v1.Death,
}

/** The sealed form of an uplink (the firmware's job; here for tests, the simulator's fleet and golden frames). */
export function sealUplink(key: Uint8Array, u: citymeter.v1.IUplink): Uint8Array {
  const kind = UP_KINDS.find((k) => u[k] !== undefined && u[k] !== null)
  if (!kind) throw new Error("an uplink needs a body")
  const type = UP_BODY[kind] as unknown as { encode(m: object): protobuf.Writer; fromObject(o: object): object }
  const plain = type.encode(type.fromObject(u[kind]!)).finish()
  const [boot, seq, link] = [num(u.boot), num(u.seq), num(u.link)]
  return Uplink.encode({ boot, seq, link, sealed: seal(key, uplinkNonce(kind, boot, seq, link), plain) }).finish()
}
