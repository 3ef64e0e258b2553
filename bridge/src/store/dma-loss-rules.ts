// Apparent-loss rules (issue 25 item 4), pure: a DMA's customer meters' days, hours and alarm
// edges → findings with their evidence. store/dma-losses.ts reads the inputs (daily and hourly
// consumption from the rollups by the balance's rule, alarm edges from alarm_events) and calls
// judgeLosses. Only customer meters are judged: bulk meters may be bidirectional by design.
// A "complete" day or hour has every interval stored (store/dma-balance.ts); the rules judge only
// complete ones, so a meter that did not report is never taken for one that registered nothing.
//
// - stuck: a run of at least `stuckDays` complete UTC days at zero, on each of which at least
//   `stuckNeighbourPct` % (and at least MIN_NEIGHBOURS) of the DMA's other customer meters with a
//   complete day consumed > 0. Evidence: the days, the meter's last non-zero day before the run
//   (within the lookback the store reads), the neighbours and how many of them consumed per day.
// - low-flow (under-registration at low flow): the meter has at least `lowFlowMinHours` complete
//   nonzero hours and none of them below `lowFlowMl`, it has hours at zero (it stops: no
//   continuous use hides small flows), its mean daily use is at least `lowFlowUsePct` % of the
//   median of the DMA's customers (normal use: not a holiday home filling a tank), and at least
//   half of the DMA's other customers judged the same way do register an hour below `lowFlowMl`
//   (so a DMA whose meters all have a coarse resolution raises nothing). A meter whose starting
//   flow is too high loses the drips, cistern top-ups and trickles its neighbours register.
// - tamper-drop: an active ALARM_TYPE_TAMPER or ALARM_TYPE_MAGNETIC_FIELD edge in the period,
//   followed by a drop: the mean of the complete days among the `dropDays` days after the event's
//   day is at least `dropPct` % below the mean of the complete days among the `baselineDays` days
//   before it (the event's own day is in neither: it is partly before and partly after).
// - reverse-flow: the meter's reverse volume over the period's days is at least `reverseMl`, or an
//   ALARM_TYPE_BACKFLOW edge was raised in the period, or one was open when it began.
import type { ApparentLoss, LossesConfig } from "./dma-store.js"

export const DAY_MS = 86_400_000
export const TAMPER_TYPES = ["ALARM_TYPE_TAMPER", "ALARM_TYPE_MAGNETIC_FIELD"] as const
export const BACKFLOW_TYPE = "ALARM_TYPE_BACKFLOW"
/** A stuck meter needs at least this many other customer meters with a complete day to compare with. */
export const MIN_NEIGHBOURS = 2

export interface MeterDay {
  meterId: string
  /** The UTC day's start, ms. */
  day: number
  waterMl: number | null
  reverseMl: number | null
  complete: boolean
}

/** A meter's complete hours in the period. */
export interface MeterHours {
  meterId: string
  nonzero: number
  zero: number
  /** Nonzero hours below lowFlowMl. */
  small: number
  smallestNonzeroMl: number | null
}

export interface AlarmEdge {
  meterId: string
  type: string
  active: boolean
  ts: Date
}

export interface LossInput {
  customers: string[]
  /** Daily rows from before `from` (the lookback) to `to`. */
  days: MeterDay[]
  hours: MeterHours[]
  /** Tamper, magnet and backflow edges in [from, to), and each (meter, type)'s last edge before from. */
  alarms: AlarmEdge[]
  from: Date
  to: Date
  cfg: LossesConfig
}

const dayText = (t: number) => new Date(t).toISOString().slice(0, 10)
const round = (x: number) => Math.round(x * 100) / 100

export function median(xs: number[]): number | null {
  if (!xs.length) return null
  const s = [...xs].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2
}

export function judgeLosses(q: LossInput): ApparentLoss[] {
  const from = q.from.getTime()
  const to = q.to.getTime()
  const dayList: number[] = []
  for (let t = from; t < to; t += DAY_MS) dayList.push(t)
  const byMeter = new Map<string, Map<number, MeterDay>>(q.customers.map((m) => [m, new Map()]))
  for (const d of q.days) byMeter.get(d.meterId)?.set(d.day, d)
  const done = (m: string, t: number) => {
    const d = byMeter.get(m)?.get(t)
    return d?.complete && d.waterMl !== null ? d.waterMl : null
  }
  return [
    ...stuck(q, dayList, done, byMeter),
    ...lowFlow(q, dayList, done),
    ...tamperDrop(q, done, byMeter),
    ...reverseFlow(q, dayList, byMeter),
  ]
}

type Done = (meterId: string, day: number) => number | null

function stuck(q: LossInput, dayList: number[], done: Done, byMeter: Map<string, Map<number, MeterDay>>) {
  const out: ApparentLoss[] = []
  // per day: customers with a complete day, and of them those that consumed
  const withData = dayList.map((t) => q.customers.filter((m) => done(m, t) !== null))
  const consuming = dayList.map((t) => new Set(q.customers.filter((m) => (done(m, t) ?? 0) > 0)))
  for (const m of q.customers) {
    const hit = dayList.map((t, i) => {
      if (done(m, t) !== 0) return null
      const n = withData[i].length - 1
      const c = consuming[i].size - (consuming[i].has(m) ? 1 : 0)
      return n >= MIN_NEIGHBOURS && (c * 100) / n >= q.cfg.stuckNeighbourPct ? { n, c } : null
    })
    for (let i = 0; i < dayList.length;) {
      if (!hit[i]) {
        i++
        continue
      }
      let j = i
      while (j < dayList.length && hit[j]) j++
      if (j - i >= q.cfg.stuckDays) {
        const run = hit.slice(i, j) as { n: number; c: number }[]
        const before = [...(byMeter.get(m)?.values() ?? [])]
          .filter((d) => d.day < dayList[i] && (d.waterMl ?? 0) > 0)
          .map((d) => d.day)
        out.push({
          meterId: m,
          kind: "stuck",
          from: new Date(dayList[i]),
          to: new Date(dayList[j - 1] + DAY_MS),
          evidence: {
            zeroDays: j - i,
            days: dayList.slice(i, j).map(dayText),
            lastNonZeroDay: before.length ? dayText(Math.max(...before)) : null,
            neighbours: run.map((r) => r.n),
            neighboursConsuming: run.map((r) => r.c),
            minNeighbourPct: round(Math.min(...run.map((r) => (r.c * 100) / r.n))),
          },
        })
      }
      i = j
    }
  }
  return out
}

function lowFlow(q: LossInput, dayList: number[], done: Done) {
  const meanDaily = new Map<string, number>()
  for (const m of q.customers) {
    const xs = dayList.map((t) => done(m, t)).filter((x): x is number => x !== null)
    if (xs.length) meanDaily.set(m, xs.reduce((s, x) => s + x, 0) / xs.length)
  }
  const dmaMedian = median([...meanDaily.values()])
  const judged = q.hours.filter((h) => h.nonzero >= q.cfg.lowFlowMinHours)
  const registeringAll = judged.filter((o) => o.small > 0).length
  const out: ApparentLoss[] = []
  for (const h of judged) {
    const others = judged.length - 1
    const registering = registeringAll - (h.small > 0 ? 1 : 0)
    const mean = meanDaily.get(h.meterId)
    if (h.small > 0 || h.zero === 0 || mean === undefined || dmaMedian === null || dmaMedian <= 0) continue
    if ((mean * 100) / dmaMedian < q.cfg.lowFlowUsePct) continue
    if (registering === 0 || registering * 2 < others) continue
    out.push({
      meterId: h.meterId,
      kind: "low-flow",
      from: q.from,
      to: q.to,
      evidence: {
        nonzeroHours: h.nonzero,
        zeroHours: h.zero,
        smallestNonzeroHourMl: h.smallestNonzeroMl,
        lowFlowMl: q.cfg.lowFlowMl,
        meanDailyMl: round(mean),
        dmaMedianDailyMl: round(dmaMedian),
        neighboursJudged: others,
        neighboursRegisteringSmall: registering,
      },
    })
  }
  return out
}

function tamperDrop(q: LossInput, done: Done, byMeter: Map<string, unknown>) {
  const out: ApparentLoss[] = []
  const mean = (m: string, a: number, b: number) => {
    const xs: number[] = []
    for (let t = a; t < b; t += DAY_MS) {
      const x = done(m, t)
      if (x !== null) xs.push(x)
    }
    return { n: xs.length, mean: xs.length ? xs.reduce((s, x) => s + x, 0) / xs.length : 0 }
  }
  const events = q.alarms.filter(
    (a) =>
      a.active &&
      (TAMPER_TYPES as readonly string[]).includes(a.type) &&
      a.ts >= q.from &&
      a.ts < q.to &&
      byMeter.has(a.meterId),
  )
  for (const e of events) {
    const day = Math.floor(e.ts.getTime() / DAY_MS) * DAY_MS
    const before = mean(e.meterId, day - q.cfg.baselineDays * DAY_MS, day)
    const afterEnd = Math.min(day + (q.cfg.dropDays + 1) * DAY_MS, q.to.getTime())
    const after = mean(e.meterId, day + DAY_MS, afterEnd)
    if (!before.n || !after.n || before.mean <= 0) continue
    const drop = (1 - after.mean / before.mean) * 100
    if (drop < q.cfg.dropPct) continue
    out.push({
      meterId: e.meterId,
      kind: "tamper-drop",
      from: new Date(day),
      to: new Date(afterEnd),
      evidence: {
        alarmType: e.type,
        eventTs: e.ts.toISOString(),
        beforeMlPerDay: round(before.mean),
        beforeDays: before.n,
        afterMlPerDay: round(after.mean),
        afterDays: after.n,
        dropPct: round(drop),
      },
    })
  }
  return out
}

function reverseFlow(q: LossInput, dayList: number[], byMeter: Map<string, Map<number, MeterDay>>) {
  const out: ApparentLoss[] = []
  const backflow = new Map<string, AlarmEdge[]>()
  for (const a of q.alarms)
    if (a.type === BACKFLOW_TYPE) backflow.set(a.meterId, [...(backflow.get(a.meterId) ?? []), a])
  for (const m of q.customers) {
    const days = dayList.filter((t) => (byMeter.get(m)?.get(t)?.reverseMl ?? 0) > 0)
    const reverseMl = days.reduce((s, t) => s + byMeter.get(m)!.get(t)!.reverseMl!, 0)
    const edges = (backflow.get(m) ?? []).sort((a, b) => a.ts.getTime() - b.ts.getTime())
    const prior = edges.filter((a) => a.ts < q.from).pop()
    const inPeriod = edges.filter((a) => a.ts >= q.from && a.ts < q.to)
    const raised = inPeriod.filter((a) => a.active).length
    const openAtFrom = prior?.active === true
    if (reverseMl < q.cfg.reverseMl && !raised && !openAtFrom) continue
    out.push({
      meterId: m,
      kind: "reverse-flow",
      from: q.from,
      to: q.to,
      evidence: {
        reverseMl,
        reverseDays: days.length,
        days: days.map(dayText),
        backflowAlarmsRaised: raised,
        backflowOpenAtFrom: openAtFrom,
        backflowOpenAtTo: (inPeriod.at(-1) ?? prior)?.active === true,
      },
    })
  }
  return out
}
