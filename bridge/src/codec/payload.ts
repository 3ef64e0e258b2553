// Uplink payload checks: an Uplink's body (readings, birth, alarm) → a checked domain frame, every
// value within its field, its channel's physics and the bridge's clock, or a FrameError.
import { citymeter } from "../gen/citymeter.js"
import { PLAUSIBLE } from "../bounds.js"
import {
  FrameError,
  MAX_ALARM_VALUE,
  MAX_FUTURE_SKEW_S,
  MAX_INTERVALS,
  MAX_INTERVAL_S,
  MAX_LABEL_CHARS,
  MIN_SYNCED_S,
  type AlarmFrame,
  type BirthFrame,
  type FrameMeta,
  type IntervalValues,
  type ReadingsFrame,
} from "./frames.js"

const { AlarmType, Channel } = citymeter.v1

/** A decoded scalar as a number; 64-bit fields decode as Long (Number() of a Long goes through its decimal string). */
export const num = (v: unknown): number =>
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

export function decodeReadings(u: citymeter.v1.Uplink, nowS: number, meta: FrameMeta): ReadingsFrame & FrameMeta {
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

export function decodeBirth(u: citymeter.v1.Uplink): BirthFrame {
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

export function decodeAlarm(u: citymeter.v1.Uplink, nowS: number): AlarmFrame {
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
