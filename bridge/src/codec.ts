// Uplink decoding and validation: bytes → a checked domain frame, or a FrameError with a stable code.
import { citymeter } from "./gen/citymeter.js"
import type { UpKind } from "./topics.js"

const { Uplink, Downlink, AlarmType } = citymeter.v1

export const MAX_PAYLOAD_BYTES = 4096
export const MAX_INTERVALS = 96
export const MAX_INTERVAL_S = 86400
/** A synced timestamp further ahead of the bridge's clock than this is clock skew. */
export const MAX_FUTURE_SKEW_S = 600

export type RejectCode =
  | "CM_ERR_TOPIC"
  | "CM_ERR_OVERSIZE"
  | "CM_ERR_DECODE"
  | "CM_ERR_KIND_MISMATCH"
  | "CM_ERR_SERIES"
  | "CM_ERR_INTERVAL"
  | "CM_ERR_SEQ"
  | "CM_ERR_CLOCK_SKEW"
  | "CM_ERR_UNKNOWN_METER"

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
  waterTotalMl?: number
  energyTotalWh?: number
  intervals: IntervalValues[]
}
export interface BirthFrame {
  kind: "birth"
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
export type UplinkFrame = ReadingsFrame | BirthFrame | AlarmFrame | DeathFrame

const num = (v: unknown): number => (v === undefined || v === null ? 0 : Number(v))

function series(name: string, values: number[] | null | undefined, n: number): number[] | undefined {
  if (!values || values.length === 0) return undefined
  if (values.length !== n) throw new FrameError("CM_ERR_SERIES", `${name} has ${values.length} entries, expected ${n}`)
  return values.map(Number)
}

function decodeReadings(u: citymeter.v1.Uplink, nowS: number): ReadingsFrame {
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
  if (r.timeSynced && startS > nowS + MAX_FUTURE_SKEW_S)
    throw new FrameError("CM_ERR_CLOCK_SKEW", `start_s ${startS} is ${startS - nowS} s ahead of the bridge`)
  const volume = series("water.volume_ml", r.water?.volumeMl, n)
  const reverse = series("water.reverse_ml", r.water?.reverseMl, n)
  const energy = series("electricity.energy_wh", r.electricity?.energyWh, n)
  const power = series("electricity.power_w", r.electricity?.powerW, n)
  const voltage = series("electricity.voltage_dv", r.electricity?.voltageDv, n)
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
  return {
    kind: "readings",
    boot: num(u.boot),
    seq: num(u.seq),
    startS,
    timeSynced: !!r.timeSynced,
    intervalS,
    replayed: !!r.replayed,
    waterTotalMl: r.water ? num(r.water.totalMl) : undefined,
    energyTotalWh: r.electricity ? num(r.electricity.totalWh) : undefined,
    intervals,
  }
}

/** Decodes and validates one uplink payload received on a topic of the given kind. */
export function decodeUplink(kind: UpKind, payload: Uint8Array, nowS = Date.now() / 1000): UplinkFrame {
  if (payload.length > MAX_PAYLOAD_BYTES)
    throw new FrameError("CM_ERR_OVERSIZE", `${payload.length} bytes, at most ${MAX_PAYLOAD_BYTES}`)
  let u: citymeter.v1.Uplink
  try {
    u = Uplink.decode(payload)
  } catch (e) {
    throw new FrameError("CM_ERR_DECODE", `not a citymeter.v1.Uplink: ${(e as Error).message}`)
  }
  // An empty will payload is accepted as a death on the death topic.
  const body = u.body ?? (kind === "death" ? "death" : undefined)
  if (body !== kind) throw new FrameError("CM_ERR_KIND_MISMATCH", `body ${body ?? "none"} on an up/${kind} topic`)
  switch (body) {
    case "readings":
      return decodeReadings(u, nowS)
    case "birth": {
      const b = u.birth!
      return {
        kind: "birth",
        boot: num(u.boot),
        seq: num(u.seq),
        firmware: b.firmware ?? "",
        board: b.board ?? "",
        intervalS: num(b.intervalS),
        batch: num(b.batch),
        waterTotalMl: num(b.waterTotalMl),
        energyTotalWh: num(b.energyTotalWh),
        queued: num(b.queued),
        dropped: num(b.dropped),
        uptimeS: num(b.uptimeS),
      }
    }
    case "alarm": {
      const a = u.alarm!
      return {
        kind: "alarm",
        boot: num(u.boot),
        seq: num(u.seq),
        type: AlarmType[a.type ?? 0] ?? `ALARM_TYPE_${a.type}`,
        active: !!a.active,
        timeS: num(a.timeS),
        timeSynced: !!a.timeSynced,
        value: num(a.value),
      }
    }
    default:
      return { kind: "death", boot: num(u.boot) }
  }
}

export function encodeDownlink(d: citymeter.v1.Downlink.$Properties): Uint8Array {
  return Downlink.encode(Downlink.fromObject(d)).finish()
}
