// Consumption reads: per meter or for the fleet, by 15 minutes, hour, day or month. The rollups
// (store/rollups.ts) answer whenever the range and time zone allow; readings otherwise. The rule
// every path follows is on ConsumptionRow (store/store.ts).
import { Params, type Db } from "./db.js"
import { consumptionSelect, districtConsumptionSql, PREVIOUS, ROLLUPS, type Rollup } from "./rollups.js"
import { DISTRICT_MONTH } from "./district-rollups.js"
import { quarterHours } from "./quarter-hours.js"
import { toConsumption } from "./rows.js"
import type { Bucket, ConsumptionQuery, ConsumptionRow, FleetConsumptionQuery, FleetConsumptionRow } from "./store.js"

/**
 * Bucket start of a time column. Fixed expressions chosen from the bucket name, never built from
 * input; tz gives the time zone's placeholder, called only by the buckets that need one. Quarter
 * hours align to UTC quarter hours, which are quarter hours in every time zone in use.
 */
const BUCKET_SQL: Record<Bucket, (col: string, tz: () => string) => string> = {
  "15min": (col) => `date_bin('15 minutes', ${col}, TIMESTAMPTZ '2000-01-01 00:00:00+00')`,
  hour: (col, tz) => `date_trunc('hour', ${col}, ${tz()}::text)`,
  day: (col, tz) => `date_trunc('day', ${col}, ${tz()}::text)`,
  month: (col, tz) => `date_trunc('month', ${col}, ${tz()}::text)`,
}

/** The time zone as a parameter, added when a bucket expression first uses it. */
const tzParam = (p: Params, q: ConsumptionQuery) => p.lazy(q.tz ?? "UTC")

const HOUR_MS = 3_600_000
const onEdge = (d: Date | undefined, ms: number) => d === undefined || d.getTime() % ms === 0

/** The rollup a query can read: daily for days and months in UTC on whole days, hourly on whole hours. */
export function rollupFor(q: ConsumptionQuery): Rollup | undefined {
  if (q.bucket === "15min") return undefined
  const [hour, day] = ROLLUPS
  if (q.bucket !== "hour" && (q.tz ?? "UTC") === "UTC" && onEdge(q.from, day.ms) && onEdge(q.to, day.ms)) return day
  if (onEdge(q.from, HOUR_MS) && onEdge(q.to, HOUR_MS)) return hour
  return undefined
}

/** SQL true when a rollup row's whole span falls in one output bucket. */
function aligned(r: Rollup, b: Bucket, tz: () => string) {
  const end = `(bucket + interval '1 ${r.unit}' - interval '1 microsecond')`
  return `${BUCKET_SQL[b]("bucket", tz)} = ${BUCKET_SQL[b](end, tz)}`
}

/**
 * Consumption per bucket. By hour, day or month from the rollups (never readings) when from and
 * to lie on whole hours (whole UTC days for the daily rollup) and the time zone's offsets are
 * whole hours; otherwise from readings; by 15 minutes from the reading columns (quarter-hours.ts).
 */
export async function consumption(db: Db, meterId: string, q: ConsumptionQuery): Promise<ConsumptionRow[]> {
  // by 15 minutes: the reading columns summed in Node, unless the range holds too many readings
  if (q.bucket === "15min") return (await quarterHours(db, meterId, q)) ?? consumptionFromReadings(db, meterId, q)
  const r = rollupFor(q)
  if (r && (r.unit !== "hour" || (await hourRollupCovers(db, q.from, [meterId])))) {
    const rows = await consumptionFromRollup(db, r, meterId, q)
    if (rows) return rows
  }
  return consumptionFromReadings(db, meterId, q)
}

/**
 * Whether rollup_hour answers from `from` on, for these meters or (null) every registered meter: it
 * was never compacted (horizon -infinity), or `from` lies at or after the horizon and each meter's
 * last hourly row before `from` does too (the first bucket's charge needs it), or the meter has no
 * reading before `from` at all. Before the horizon, compaction dropped the hourly rows
 * (compaction.ts).
 */
export async function hourRollupCovers(db: Db, from: Date | undefined, meterIds: string[] | null) {
  const { rows } = await db.query<{ ok: boolean }>(
    `SELECT s.horizon = '-infinity' OR ($1::timestamptz >= s.horizon AND NOT EXISTS (
       SELECT 1 FROM meters m WHERE ($2::text[] IS NULL OR m.meter_id = ANY($2::text[])) AND COALESCE(
         (SELECT max(bucket) FROM rollup_hour t WHERE t.meter_id = m.meter_id AND t.bucket < $1) < s.horizon,
         EXISTS (SELECT 1 FROM reading_blocks b WHERE b.meter_id = m.meter_id AND b.month < $1)))) AS ok
     FROM compaction_state s`,
    [from ?? null, meterIds],
  )
  return rows[0]?.ok === true
}

/**
 * Consumption per bucket from a rollup; undefined when a row's hour straddles an output bucket
 * (a time zone with a sub-hour offset). Each row's first reading is charged against the previous
 * row's last total, from the last row before `from` on.
 */
async function consumptionFromRollup(db: Db, r: Rollup, meterId: string, q: ConsumptionQuery) {
  const p = new Params()
  const [meter, from, to, tz] = [p.add(meterId), p.add(q.from ?? null), p.add(q.to ?? null), tzParam(p, q)]
  const sql = `WITH r AS (
      SELECT *, ${PREVIOUS} FROM ${r.table}
      WHERE meter_id = ${meter} AND (${to}::timestamptz IS NULL OR bucket < ${to})
        AND bucket >= COALESCE(
          (SELECT max(bucket) FROM ${r.table} WHERE meter_id = ${meter} AND bucket < ${from}::timestamptz),
          ${from}, '-infinity')
      WINDOW w AS (ORDER BY bucket))
    ${consumptionSelect(BUCKET_SQL[q.bucket]("bucket", tz))}, bool_and(${aligned(r, q.bucket, tz)}) AS aligned
    FROM r WHERE ${from}::timestamptz IS NULL OR bucket >= ${from}
    GROUP BY 1 ORDER BY 1`
  const { rows } = await db.query(sql, p.values)
  if (rows.some((x) => !x.aligned)) return undefined
  return rows.map(toConsumption)
}

const DISTRICT_CONSUMPTION = districtConsumptionSql()
const DISTRICT_MONTH_CONSUMPTION = districtConsumptionSql(DISTRICT_MONTH)

/** Undefined or the start of a UTC month. */
const onMonth = (d: Date | undefined) => d === undefined || (d.getTime() % 86_400_000 === 0 && d.getUTCDate() === 1)

/**
 * The fleet's consumption per bucket (hour, day, month) from the rollups: every meter's, summed.
 * Undefined when the range or time zone does not fit the rollups (see consumption).
 * By UTC day (per district too) and by UTC month over whole months (the fleet only): one row per
 * district and bucket (district-rollups.ts).
 */
export async function fleetConsumption(db: Db, q: FleetConsumptionQuery): Promise<FleetConsumptionRow[] | undefined> {
  const r = rollupFor(q)
  // by UTC day: one row per district and day (rollup_district_day), whatever the fleet's size
  if (r?.unit === "day" && q.bucket === "day") {
    const { rows } = await db.query(DISTRICT_CONSUMPTION, [q.from ?? null, q.to ?? null, q.district ?? null])
    return rows.map((x) => ({ ...toConsumption(x), meters: Number(x.meters) }))
  }
  // by UTC month, the whole fleet, from and to on month starts: one row per district and month
  if (r?.unit === "day" && q.bucket === "month" && q.district === undefined && onMonth(q.from) && onMonth(q.to)) {
    const { rows } = await db.query(DISTRICT_MONTH_CONSUMPTION, [q.from ?? null, q.to ?? null, null])
    return rows.map((x) => ({ ...toConsumption(x), meters: Number(x.meters) }))
  }
  if (!r || q.district !== undefined) return undefined
  if (r.unit === "hour" && !(await hourRollupCovers(db, q.from, null))) return fleetConsumptionFromReadings(db, q)
  return fleetConsumptionByMeter(db, q, r)
}

/**
 * The fleet's consumption per bucket from every meter's rollup rows (a row per meter and hour
 * or day in the range). Exported for tests and benchmarks, which compare the district days to it.
 */
export async function fleetConsumptionByMeter(
  db: Db,
  q: ConsumptionQuery,
  r = rollupFor(q),
): Promise<FleetConsumptionRow[] | undefined> {
  if (!r) return undefined
  const p = new Params()
  const [from, to, tz] = [p.add(q.from ?? null), p.add(q.to ?? null), tzParam(p, q)]
  // each meter's last row before `from` (an index probe per meter), so its first row has a predecessor
  const sql = `WITH r AS (
      SELECT *, ${PREVIOUS} FROM (
        SELECT * FROM ${r.table}
        WHERE (${from}::timestamptz IS NULL OR bucket >= ${from}) AND (${to}::timestamptz IS NULL OR bucket < ${to})
        UNION ALL
        SELECT p.* FROM meters m CROSS JOIN LATERAL (
          SELECT * FROM ${r.table} t WHERE t.meter_id = m.meter_id AND t.bucket < ${from}::timestamptz
          ORDER BY t.bucket DESC LIMIT 1) p
        WHERE ${from}::timestamptz IS NOT NULL) x
      WINDOW w AS (PARTITION BY meter_id ORDER BY bucket))
    ${consumptionSelect(BUCKET_SQL[q.bucket]("bucket", tz))}, bool_and(${aligned(r, q.bucket, tz)}) AS aligned
    FROM r WHERE ${from}::timestamptz IS NULL OR bucket >= ${from}
    GROUP BY 1 ORDER BY 1`
  const { rows } = await db.query(sql, p.values)
  if (rows.some((x) => !x.aligned)) return undefined
  return rows.map((x) => ({ ...toConsumption(x), meters: Number(x.meters) }))
}

/**
 * Consumption per bucket from readings (the rule is on ConsumptionRow): LAG over the meter's
 * readings in time order, starting from the last reading before `from` so the first bucket's
 * difference has its predecessor. Exported for tests and benchmarks, which compare the rollups to it.
 */
export async function consumptionFromReadings(db: Db, meterId: string, q: ConsumptionQuery): Promise<ConsumptionRow[]> {
  return (await fromReadings(db, meterId, q)).map(toConsumption)
}

/**
 * The fleet's consumption per bucket from every registered meter's readings, as
 * consumptionFromReadings per meter, summed: what the hourly rollup answers, for ranges before
 * compaction's horizon.
 */
export async function fleetConsumptionFromReadings(db: Db, q: ConsumptionQuery): Promise<FleetConsumptionRow[]> {
  return (await fromReadings(db, null, q)).map((x) => ({ ...toConsumption(x), meters: Number(x.meters) }))
}

async function fromReadings(db: Db, meterId: string | null, q: ConsumptionQuery) {
  const bucket = BUCKET_SQL[q.bucket]
  if (!bucket) throw new Error(`unknown bucket ${q.bucket}`)
  const p = new Params()
  const [from, to, tz] = [p.add(q.from ?? null), p.add(q.to ?? null), tzParam(p, q)]
  const meters = meterId === null ? `meters m` : `(SELECT ${p.add(meterId)}::text AS meter_id) m`
  // the range starts at the meter's last reading before `from`, found once per meter (OFFSET 0
  // keeps it a value: inlined into readings_between, it would run again for every reading)
  const sql = `WITH r AS (
      SELECT m.meter_id, x.ts, x.interval_s, x.volume_ml, x.water_total_ml, x.energy_wh, x.energy_total_wh,
        x.reverse_ml, LAG(x.water_total_ml) OVER w AS prev_water, LAG(x.energy_total_wh) OVER w AS prev_energy,
        LAG(x.ts + make_interval(secs => x.interval_s)) OVER w AS prev_end
      FROM ${meters}
      CROSS JOIN LATERAL (SELECT COALESCE(reading_ts_before(m.meter_id, ${from}::timestamptz), ${from}, '-infinity')
        AS t0 OFFSET 0) s
      CROSS JOIN LATERAL readings_between(m.meter_id, s.t0, COALESCE(${to}::timestamptz, 'infinity')) x
      WINDOW w AS (PARTITION BY m.meter_id ORDER BY x.ts, x.boot, x.seq, x.idx))
    SELECT ${bucket("ts", tz)} AS start,
      sum(CASE WHEN water_total_ml >= prev_water THEN water_total_ml - prev_water ELSE volume_ml END) AS water,
      sum(CASE WHEN energy_total_wh >= prev_energy THEN energy_total_wh - prev_energy ELSE energy_wh END) AS energy,
      sum(reverse_ml) AS reverse_ml, count(*) AS readings,
      bool_or(ts > prev_end) AS gap${meterId === null ? ", count(DISTINCT meter_id) AS meters" : ""}
    FROM r WHERE ${from}::timestamptz IS NULL OR ts >= ${from}
    GROUP BY 1 ORDER BY 1`
  const { rows } = await db.query(sql, p.values)
  return rows
}
