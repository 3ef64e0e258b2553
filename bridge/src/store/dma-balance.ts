// The water balance of district metered areas and their minimum night flow (issue 25 items 2-3).
// By day and UTC month, a DMA's district meters are read from the district days kept by ingest
// (store/dma-days.ts: a row per district and day, whatever the number of meters) and its explicit
// members per meter from their rollup rows; by hour, and for ranges off those edges, every member
// per meter (dmaBalancePerMeter). A late frame changes exactly the periods it touches: the district
// days it touches are updated in its batch, and the rest is computed at the read.
//
// Per meter and rollup bucket (an hour or a UTC day): its consumption by the rule (ConsumptionRow:
// each row's first reading charged against the previous row's last total), its reverse flow, and
// whether the bucket is complete: every interval of it is stored. Complete means: no gap inside the
// row, its last interval ends at or after the bucket's end, and its first interval starts where the
// meter's previous stored interval ended (so the first charge holds no missing interval); a meter
// with no earlier reading must start at the bucket's start. Hours before compaction's horizon have
// no rollup_hour rows: they are computed from the readings (readings_between) with the same rule.
//
// Per DMA and period: system input volume = Σ inflow meters (forward − reverse) − Σ outflow meters
// (forward − reverse); billed metered consumption = Σ customer meters' forward consumption; water
// losses = input − billed; the non-revenue water share = losses / input. Coverage = the DMA's
// meters complete for every bucket of the period / the DMA's meters; provisional when below 1.
import { hourRollupCovers } from "./consumption.js"
import type { Db } from "./db.js"
import { DISTRICT_DAYS, DISTRICT_METERS, DISTRICT_MONTHS } from "./dma-days.js"
import type {
  BalanceBucket,
  DmaBalanceQuery,
  DmaBalanceRow,
  NightFlowAnswer,
  NightFlowConfig,
  NightFlowQuery,
} from "./dma-store.js"
export * from "./dma-store.js"

const UNIT_MS = { hour: 3_600_000, day: 86_400_000 } as const
const ROW_COLUMNS = `bucket, first_ts, last_end, gap, reverse_ml, water_used, first_water_total_ml, first_volume_ml, last_water_total_ml`

/**
 * Per (meter, bucket) rows b(meter_id, bucket, water, reverse_ml, complete) of the meters in CTE
 * `m`, from a rollup table: CTEs r, b. $2 from, $3 to.
 */
const fromRollup = (table: string, unit: "hour" | "day") => `r AS (
    SELECT m.meter_id, x.*, LAG(x.last_water_total_ml) OVER w AS p_total, LAG(x.last_end) OVER w AS p_end
    FROM m CROSS JOIN LATERAL (
      (SELECT ${ROW_COLUMNS} FROM ${table} t WHERE t.meter_id = m.meter_id AND t.bucket < $2
       ORDER BY t.bucket DESC LIMIT 1)
      UNION ALL
      (SELECT ${ROW_COLUMNS} FROM ${table} t WHERE t.meter_id = m.meter_id AND t.bucket >= $2 AND t.bucket < $3)) x
    WINDOW w AS (PARTITION BY m.meter_id ORDER BY x.bucket)),
  b AS (
    SELECT meter_id, bucket,
      CASE WHEN water_used IS NULL AND first_water_total_ml IS NULL AND first_volume_ml IS NULL THEN NULL
        ELSE COALESCE(water_used, 0) + COALESCE(CASE WHEN first_water_total_ml >= p_total
          THEN first_water_total_ml - p_total ELSE first_volume_ml END, 0) END AS water,
      reverse_ml,
      (NOT gap AND last_end >= bucket + interval '1 ${unit}'
        AND CASE WHEN p_end IS NULL THEN first_ts <= bucket ELSE p_end >= first_ts END) AS complete
    FROM r WHERE bucket >= $2)`

/** The same rows b from readings, by UTC hour (hours before compaction's horizon). */
const FROM_READINGS = `r AS (
    SELECT m.meter_id, x.ts, date_trunc('hour', x.ts, 'UTC') AS bucket, x.volume_ml, x.water_total_ml, x.reverse_ml,
      x.ts + make_interval(secs => x.interval_s) AS end_ts,
      LAG(x.water_total_ml) OVER w AS prev_total, LAG(x.ts + make_interval(secs => x.interval_s)) OVER w AS prev_end
    FROM m
    CROSS JOIN LATERAL (SELECT COALESCE(reading_ts_before(m.meter_id, $2), $2) AS t0 OFFSET 0) s
    CROSS JOIN LATERAL readings_between(m.meter_id, s.t0, $3) x
    WINDOW w AS (PARTITION BY m.meter_id ORDER BY x.ts, x.boot, x.seq, x.idx)),
  b AS (
    SELECT meter_id, bucket,
      sum(CASE WHEN water_total_ml >= prev_total THEN water_total_ml - prev_total ELSE volume_ml END) AS water,
      sum(reverse_ml) AS reverse_ml,
      bool_and(CASE WHEN prev_end IS NULL THEN ts <= bucket ELSE prev_end >= ts END)
        AND max(end_ts) >= bucket + interval '1 hour' AS complete
    FROM r WHERE ts >= $2 GROUP BY meter_id, bucket)`

/** The CTEs r, b for the meters of `m` and [$2, $3) in `unit` buckets: the rollup when it answers, else readings. */
export async function meterBuckets(db: Db, unit: "hour" | "day", from: Date, meters: string[]) {
  if (unit === "day") return fromRollup("rollup_day", "day")
  return (await hourRollupCovers(db, from, meters)) ? fromRollup("rollup_hour", "hour") : FROM_READINGS
}

const MEMBERS = `mem AS (SELECT dma_id, meter_id, role FROM dma_members WHERE $1::text[] IS NULL OR dma_id = ANY($1::text[])),
  m AS (SELECT DISTINCT meter_id FROM mem)`

/** Period starts in [from, to) and how many rollup buckets each holds. */
export function periods(bucket: BalanceBucket, from: Date, to: Date): { start: Date; buckets: number }[] {
  const out: { start: Date; buckets: number }[] = []
  if (bucket !== "month") {
    for (let t = from.getTime(); t < to.getTime(); t += UNIT_MS[bucket]) out.push({ start: new Date(t), buckets: 1 })
    return out
  }
  for (let t = new Date(from); t < to;) {
    const next = new Date(Date.UTC(t.getUTCFullYear(), t.getUTCMonth() + 1, 1))
    out.push({ start: t, buckets: Math.round((Math.min(next.getTime(), to.getTime()) - t.getTime()) / UNIT_MS.day) })
    t = next
  }
  return out
}

async function memberIds(db: Db, dmaIds: string[] | null) {
  const { rows } = await db.query<{ meter_id: string }>(
    `SELECT DISTINCT meter_id FROM dma_members WHERE $1::text[] IS NULL OR dma_id = ANY($1::text[])`,
    [dmaIds],
  )
  return rows.map((r) => r.meter_id)
}

/**
 * The balance from each member meter's rollup rows, computed at the read: the hour bucket, and the
 * reference the district days (dmaBalance) are compared with in the tests.
 */
export async function dmaBalancePerMeter(db: Db, q: DmaBalanceQuery): Promise<DmaBalanceRow[]> {
  const ids = q.dmaIds ?? null
  const unit = q.bucket === "hour" ? "hour" : "day"
  const ps = periods(q.bucket, q.from, q.to)
  const source = await meterBuckets(db, unit, q.from, unit === "hour" ? await memberIds(db, ids) : [])
  const out = q.bucket === "month" ? `date_trunc('month', bucket, 'UTC')` : `bucket`
  const sql = `WITH ${MEMBERS}, ${source},
    bp AS (
      SELECT meter_id, ${out} AS start, sum(water) AS water, sum(reverse_ml) AS reverse_ml, count(*) AS n,
        bool_and(complete) AS ok
      FROM b GROUP BY 1, 2),
    per AS (
      SELECT mem.dma_id, mem.role, p.start, p.expected, bp.water, bp.reverse_ml, bp.n, bp.ok
      FROM mem CROSS JOIN unnest($4::timestamptz[], $5::int[]) AS p(start, expected)
      LEFT JOIN bp ON bp.meter_id = mem.meter_id AND bp.start = p.start)
    SELECT dma_id, start,
      COALESCE(sum(COALESCE(water, 0) - COALESCE(reverse_ml, 0)) FILTER (WHERE role = 'inflow'), 0) AS inflow,
      COALESCE(sum(COALESCE(water, 0) - COALESCE(reverse_ml, 0)) FILTER (WHERE role = 'outflow'), 0) AS outflow,
      COALESCE(sum(water) FILTER (WHERE role = 'customer'), 0) AS billed,
      count(*) AS meters, count(*) FILTER (WHERE ok AND n = expected) AS complete
    FROM per GROUP BY dma_id, start ORDER BY dma_id, start`
  const { rows } = await db.query(sql, [ids, q.from, q.to, ps.map((p) => p.start), ps.map((p) => p.buckets)])
  return balanceRows(db, q, ps, rows)
}

/** Whether the district days answer: whole UTC days, or whole UTC months (each period a month start with all its days). */
function onDistrictDays(q: DmaBalanceQuery, ps: { start: Date; buckets: number }[]) {
  if (q.bucket === "hour") return false
  if (q.bucket === "day") return q.from.getTime() % UNIT_MS.day === 0
  return ps.every(({ start: t, buckets }) => {
    const next = Date.UTC(t.getUTCFullYear(), t.getUTCMonth() + 1, 1)
    return (
      t.getTime() === Date.UTC(t.getUTCFullYear(), t.getUTCMonth(), 1) && buckets * UNIT_MS.day === next - t.getTime()
    )
  })
}

/**
 * The water balance of DMAs per period. By day and by UTC month from the district days
 * (store/dma-days.ts): a DMA's district meters are its district's rows, its explicit members are
 * computed per meter (fromRollup), and an explicit member registered in the DMA's district is
 * taken out of the district's rows (it counts with its explicit role). Hours, and ranges off
 * the days' or months' edges, per meter (dmaBalancePerMeter). The same numbers either way.
 */
export async function dmaBalance(db: Db, q: DmaBalanceQuery): Promise<DmaBalanceRow[]> {
  const ps = periods(q.bucket, q.from, q.to)
  if (!onDistrictDays(q, ps)) return dmaBalancePerMeter(db, q)
  const month = q.bucket === "month"
  const out = month ? `date_trunc('month', bucket, 'UTC')` : `bucket`
  // $1 DMA ids (NULL: all), $2 from, $3 to, $4 period starts, $5 days per period
  const sql = `WITH d AS (SELECT dma_id FROM dmas WHERE $1::text[] IS NULL OR dma_id = ANY($1::text[])),
    mem AS (
      SELECT x.dma_id, x.meter_id, x.role,
        COALESCE((SELECT g.district = x.dma_id FROM meters g WHERE g.meter_id = x.meter_id), false) AS shadows
      FROM dma_meters x JOIN d ON d.dma_id = x.dma_id),
    m AS (SELECT DISTINCT meter_id FROM mem),
    ${fromRollup("rollup_day", "day")},
    bp AS (
      SELECT meter_id, ${out} AS start, sum(water) AS water, sum(reverse_ml) AS reverse_ml, count(*) AS n,
        bool_and(complete) AS ok
      FROM b GROUP BY 1, 2),
    per AS (
      SELECT mem.dma_id, mem.role, mem.shadows, p.start, bp.water, bp.reverse_ml,
        COALESCE(bp.ok AND bp.n = p.expected, false) AS ok
      FROM mem CROSS JOIN unnest($4::timestamptz[], $5::int[]) AS p(start, expected)
      LEFT JOIN bp ON bp.meter_id = mem.meter_id AND bp.start = p.start),
    ex AS (
      SELECT dma_id, start,
        COALESCE(sum(COALESCE(water, 0) - COALESCE(reverse_ml, 0)) FILTER (WHERE role = 'inflow'), 0) AS inflow,
        COALESCE(sum(COALESCE(water, 0) - COALESCE(reverse_ml, 0)) FILTER (WHERE role = 'outflow'), 0) AS outflow,
        COALESCE(sum(water) FILTER (WHERE role = 'customer'), 0) - COALESCE(sum(water) FILTER (WHERE shadows), 0) AS billed,
        count(*) - count(*) FILTER (WHERE shadows) AS meters,
        count(*) FILTER (WHERE ok) - count(*) FILTER (WHERE ok AND shadows) AS complete
      FROM per GROUP BY dma_id, start),
    dm AS (SELECT district, meters FROM ${DISTRICT_METERS} WHERE district IN (SELECT dma_id FROM d)),
    dd AS (
      SELECT district, ${out} AS start, sum(water) AS water, sum(complete) AS complete FROM ${DISTRICT_DAYS}
      WHERE district IN (SELECT dma_id FROM d) AND bucket >= $2 AND bucket < $3 GROUP BY 1, 2),
    dc AS (${
      month
        ? `SELECT district, month AS start, complete FROM ${DISTRICT_MONTHS}
      WHERE district IN (SELECT dma_id FROM d) AND month >= $2 AND month < $3`
        : `SELECT district, start, complete FROM dd`
    })
    SELECT d.dma_id, p.start, COALESCE(ex.inflow, 0) AS inflow, COALESCE(ex.outflow, 0) AS outflow,
      COALESCE(ex.billed, 0) + COALESCE(dd.water, 0) AS billed,
      COALESCE(ex.meters, 0) + COALESCE(dm.meters, 0) AS meters,
      COALESCE(ex.complete, 0) + COALESCE(dc.complete, 0) AS complete
    FROM d CROSS JOIN unnest($4::timestamptz[]) AS p(start)
    LEFT JOIN ex ON ex.dma_id = d.dma_id AND ex.start = p.start
    LEFT JOIN dm ON dm.district = d.dma_id
    LEFT JOIN dd ON dd.district = d.dma_id AND dd.start = p.start
    LEFT JOIN dc ON dc.district = d.dma_id AND dc.start = p.start`
  const { rows } = await db.query(sql, [
    q.dmaIds ?? null,
    q.from,
    q.to,
    ps.map((p) => p.start),
    ps.map((p) => p.buckets),
  ])
  return balanceRows(db, q, ps, rows)
}

/** Each DMA's (the query's, or every one by id) periods from the summed rows (dma_id, start, inflow, outflow, billed, meters, complete). */
async function balanceRows(
  db: Db,
  q: DmaBalanceQuery,
  ps: { start: Date }[],
  rows: Record<string, unknown>[],
): Promise<DmaBalanceRow[]> {
  const found = new Map(rows.map((r) => [`${String(r.dma_id)}\u0000${new Date(r.start as string).getTime()}`, r]))
  const dmas =
    q.dmaIds ??
    (await db.query<{ dma_id: string }>(`SELECT dma_id FROM dmas ORDER BY dma_id`)).rows.map((r) => r.dma_id)
  return dmas.flatMap((dmaId) =>
    ps.map((p) => {
      const r = found.get(`${dmaId}\u0000${p.start.getTime()}`)
      const inflowMl = Number(r?.inflow ?? 0)
      const outflowMl = Number(r?.outflow ?? 0)
      const billedMl = Number(r?.billed ?? 0)
      const meters = Number(r?.meters ?? 0)
      const completeMeters = Number(r?.complete ?? 0)
      const systemInputMl = inflowMl - outflowMl
      const lossesMl = systemInputMl - billedMl
      const coverage = meters ? completeMeters / meters : 0
      return {
        dmaId,
        start: p.start,
        inflowMl,
        outflowMl,
        systemInputMl,
        billedMl,
        lossesMl,
        nrwShare: systemInputMl > 0 ? lossesMl / systemInputMl : null,
        meters,
        completeMeters,
        coverage,
        provisional: coverage < 1,
      }
    }),
  )
}

/** Hours of the window [fromHour, toHour), wrapping past midnight. */
export const windowHours = (w: Pick<NightFlowConfig, "fromHour" | "toHour">) => (w.toHour - w.fromHour + 24) % 24 || 24

export async function dmaNightFlow(db: Db, q: NightFlowQuery): Promise<NightFlowAnswer> {
  const meters = await memberIds(db, [q.dmaId])
  // a window lasts at most a day: the hours of the last night end before to + 1 day
  const to = new Date(q.to.getTime() + UNIT_MS.day)
  const source = await meterBuckets(db, "hour", q.from, meters)
  const { fromHour, toHour, tz } = q.window
  const inWindow = fromHour < toHour ? `h >= ${fromHour} AND h < ${toHour}` : `(h >= ${fromHour} OR h < ${toHour})`
  const hours = windowHours(q.window)
  const sql = `WITH ${MEMBERS}, ${source},
    w AS (
      SELECT b.*, mem.role, night FROM b JOIN mem USING (meter_id)
      CROSS JOIN LATERAL (SELECT extract(hour FROM b.bucket AT TIME ZONE $4::text)::int AS h,
        ((b.bucket AT TIME ZONE $4::text) - make_interval(hours => ${fromHour}))::date AS night) l
      WHERE ${inWindow}
        AND ((l.night + make_interval(hours => ${fromHour})) AT TIME ZONE $4::text) >= $2
        AND ((l.night + make_interval(hours => ${fromHour})) AT TIME ZONE $4::text) < $5),
    bulk AS (SELECT count(*) AS n FROM mem WHERE role <> 'customer'),
    hourly AS (
      SELECT night, bucket,
        sum(CASE role WHEN 'inflow' THEN COALESCE(water, 0) - COALESCE(reverse_ml, 0)
          WHEN 'outflow' THEN COALESCE(reverse_ml, 0) - COALESCE(water, 0) END) AS input,
        sum(water) FILTER (WHERE role = 'customer') AS customers,
        count(*) FILTER (WHERE role <> 'customer' AND complete) = (SELECT n FROM bulk) AS complete,
        count(*) FILTER (WHERE role <> 'customer') AS bulk_rows
      FROM w GROUP BY night, bucket)
    SELECT 'dma' AS kind, NULL::text AS meter_id, night::text AS night,
      (array_agg(input ORDER BY input, bucket) FILTER (WHERE bulk_rows > 0))[1] AS min,
      (array_agg(bucket ORDER BY input, bucket) FILTER (WHERE bulk_rows > 0))[1] AS at,
      (array_agg(customers ORDER BY input, bucket) FILTER (WHERE bulk_rows > 0))[1] AS customers,
      count(*) FILTER (WHERE bulk_rows > 0) AS hours,
      count(*) FILTER (WHERE complete) = ${hours} AS complete
    FROM hourly GROUP BY night
    ${
      q.meters
        ? `UNION ALL
    SELECT 'meter', meter_id, night::text, min(water), NULL, NULL, count(*), bool_and(complete) AND count(*) = ${hours}
    FROM w WHERE role = 'customer' GROUP BY meter_id, night`
        : ""
    }
    ORDER BY kind, meter_id, night`
  const { rows } = await db.query(sql, [[q.dmaId], q.from, to, tz, q.to])
  const num = (v: unknown) => (v === null || v === undefined ? null : Number(v))
  return {
    dma: rows
      .filter((r) => r.kind === "dma")
      .map((r) => ({
        night: r.night as string,
        minInputMlPerH: num(r.min),
        at: r.at ? new Date(r.at as string) : null,
        customersMl: num(r.customers),
        hours: Number(r.hours),
        complete: r.complete === true,
      })),
    meters: rows
      .filter((r) => r.kind === "meter")
      .map((r) => ({
        meterId: r.meter_id as string,
        night: r.night as string,
        minMlPerH: num(r.min),
        complete: r.complete === true,
      })),
  }
}
