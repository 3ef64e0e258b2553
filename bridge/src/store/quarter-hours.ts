// A meter's consumption by 15 minutes from its reading columns (reading-columns.ts), in Node: the
// rule of consumption.ts's fromReadings (ConsumptionRow) over the same readings, without the
// engine decoding every block and aggregating row by row (a meter's year: 0.4–1.0 s in SQL).
// tests/store/compaction-api.test.ts compares it with the SQL path on both engines.
import type { Db } from "./db.js"
import { exactColumns } from "./reading-columns.js"
import type { ConsumptionQuery, ConsumptionRow } from "./store.js"

/** Readings one answer reads into memory at most; past it, the SQL path answers (undefined). */
export const QUARTER_HOURS_CAP = 400_000
const QUARTER_US = 900_000_000
/** The columns the rule reads (and the order's, which every read has). */
const QUARTER_HOUR_KEYS = ["intervalS", "volumeMl", "reverseMl", "waterTotalMl", "energyWh", "energyTotalWh"] as const

/** The epoch µs of the meter's last reading before t, or null (readings_between's reading_ts_before). */
async function lastBefore(db: Db, meterId: string, t: Date): Promise<number | null> {
  const { rows } = await db.query<{ us: string | null }>(
    `SELECT (extract(epoch FROM reading_ts_before($1, $2::timestamptz)) * 1000000)::bigint::text AS us`,
    [meterId, t],
  )
  return rows[0]?.us == null ? null : Number(rows[0].us)
}

export async function quarterHours(db: Db, meterId: string, q: ConsumptionQuery) {
  // from the meter's last reading before `from`: the first bucket's first reading has its predecessor
  const before = q.from ? await lastBefore(db, meterId, q.from) : null
  const start = before === null ? q.from : new Date(Math.floor(before / 1000))
  const { count, columns: c } = await exactColumns(
    db,
    meterId,
    {
      from: start,
      to: q.to,
      limit: QUARTER_HOURS_CAP + 1,
    },
    { keys: QUARTER_HOUR_KEYS, cap: QUARTER_HOURS_CAP },
  )
  if (count > QUARTER_HOURS_CAP) return undefined
  const fromUs = q.from ? q.from.getTime() * 1000 : -Infinity
  const ts = c.ts as number[]
  const interval = c.intervalS as number[]
  /** The interval's amount of a counter: its total's increase, or its own amount (the rule). */
  const used = (total: (number | null)[], amount: (number | null)[], i: number) => {
    const t = total[i]
    const p = i > 0 ? total[i - 1] : null
    return t !== null && p !== null && t >= p ? t - p : amount[i]
  }
  const add = (a: number | null, b: number | null) => (b === null ? a : (a ?? 0) + b)
  const out: ConsumptionRow[] = []
  let bucket = NaN
  let row: ConsumptionRow | undefined
  let gap: boolean | null = null
  for (let i = 0; i < count; i++) {
    if (ts[i] < fromUs) continue
    const b = Math.floor(ts[i] / QUARTER_US) * QUARTER_US
    if (b !== bucket) {
      if (row) out.push({ ...row, gap: gap === true })
      bucket = b
      row = { start: new Date(b / 1000), waterMl: null, energyWh: null, reverseMl: null, readings: 0, gap: false }
      gap = null
    }
    row!.waterMl = add(row!.waterMl, used(c.waterTotalMl as (number | null)[], c.volumeMl as (number | null)[], i))
    row!.energyWh = add(row!.energyWh, used(c.energyTotalWh as (number | null)[], c.energyWh as (number | null)[], i))
    row!.reverseMl = add(row!.reverseMl, c.reverseMl[i] as number | null)
    row!.readings++
    // a gap: the reading starts after the previous one's interval ended (SQL's bool_or: NULL-blind)
    if (i > 0) gap = gap === true || ts[i] > ts[i - 1] + interval[i - 1] * 1_000_000
  }
  if (row) out.push({ ...row, gap: gap === true })
  return out
}
