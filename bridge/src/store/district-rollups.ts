// The districts' days (rollup_district_day) and months (rollup_district_month), kept in the
// ingest transaction (issue 24 item 3), so the fleet by day or by UTC month reads one row per
// district and bucket whatever the number of meters.
//
// What a rollup_day row adds to its district's day depends on the row and its meter's previous
// row (CONTRIBUTIONS, rollups.ts). A batch counts, before its day rows are written, what the
// touched rows and the next row of each add now (BEFORE_SQL, read only); after the upsert it
// counts them again and adds the differences (SETTLE_SQL): exact under late backfills, and each
// day row is written once per batch (by its upsert; before, a second UPDATE kept what it had
// added in c_* columns, and every batch left two dead versions of each of its meters' day rows).
// A day row is counted in the district its meter had when the row was first written (the
// upsert's INSERT sets rollup_day.district, never changed after), so a meter that moves keeps its
// past days where they were measured.
//
// A month's counters are its days' summed. Its meters are not: the fleet by month counts distinct
// meters per month. A meter-month is counted once, in the district of the batch that stored the
// meter's first day row of that month (BEFORE_SQL lists the batch's meter-months with no day row
// yet), so the months' meters summed over districts are the fleet's distinct meters per month.
import { CONTRIBUTIONS, DISTRICT_COUNTERS, DISTRICT_DAY } from "./rollups.js"

export const DISTRICT_MONTH = "rollup_district_month"

const MONTH = (col: string) => `date_trunc('month', ${col}, 'UTC')`
const COUNTER_COLS = DISTRICT_COUNTERS.flatMap((c) => [c, `${c}_rows`])
const C_COLS_DROPPED = ["counted", ...DISTRICT_COUNTERS.map((c) => `c_${c}`)]

/**
 * The touched rows of a batch ($1 meter ids, $2 day starts in epoch ms) and the next row of each
 * (whose first-reading charge depends on the touched row's last total), with what each adds to
 * its district's day now, summed per (district, day): CTEs k, a, f, g.
 */
const COUNT_ROWS = `k AS (SELECT DISTINCT u.meter_id, to_timestamp(u.ms / 1000) AS bucket
      FROM unnest($1::text[], $2::float8[]) AS u(meter_id, ms)),
    a AS (
      SELECT meter_id, bucket FROM k
      UNION
      SELECT n.meter_id, n.bucket FROM k CROSS JOIN LATERAL (
        SELECT t.meter_id, t.bucket FROM rollup_day t WHERE t.meter_id = k.meter_id AND t.bucket > k.bucket
        ORDER BY t.bucket LIMIT 1) n),
    f AS (
      SELECT COALESCE(t.district, '') AS district, t.bucket,
        ${CONTRIBUTIONS.map(([c, e]) => `${e} AS n_${c}`).join(",\n        ")}
      FROM a JOIN rollup_day t ON t.meter_id = a.meter_id AND t.bucket = a.bucket
      LEFT JOIN LATERAL (
        SELECT * FROM rollup_day q WHERE q.meter_id = t.meter_id AND q.bucket < t.bucket
        ORDER BY q.bucket DESC LIMIT 1) p ON true),
    g AS (
      SELECT district, bucket, count(*)::bigint AS meters,
        ${DISTRICT_COUNTERS.map((c) => `COALESCE(sum(n_${c}), 0)::bigint AS ${c}, count(n_${c})::bigint AS ${c}_rows`).join(", ")}
      FROM f GROUP BY district, bucket)`

/** A row of BEFORE_SQL: kind 'd' a district's day as counted now, 'm' a meter-month with no day row yet. */
export interface BeforeRow {
  kind: "d" | "m"
  key: string
  ms: number
  [counter: string]: unknown
}

/**
 * Before a batch's day rows are written (parameters $1, $2 as COUNT_ROWS): what its rows add to
 * their districts' days now (kind 'd', key the district), and its meter-months that have no day
 * row yet (kind 'm', key the meter id). Reads only.
 */
export const BEFORE_SQL = `WITH ${COUNT_ROWS}
  SELECT 'd' AS kind, district AS key, extract(epoch FROM bucket)::float8 * 1000 AS ms, meters,
    ${COUNTER_COLS.join(", ")} FROM g
  UNION ALL
  SELECT 'm', m.meter_id, extract(epoch FROM m.month)::float8 * 1000, 0, ${COUNTER_COLS.map(() => "0").join(", ")}
  FROM (SELECT DISTINCT meter_id, ${MONTH("bucket")} AS month FROM k) m
  WHERE NOT EXISTS (SELECT 1 FROM rollup_day t
    WHERE t.meter_id = m.meter_id AND t.bucket >= m.month AND t.bucket < m.month + interval '1 month')`

/** SETTLE_SQL's parameters after $1, $2: the 'd' rows of BEFORE_SQL by column, then the 'm' rows' meters and months. */
export function settleParams(days: unknown[][], before: BeforeRow[]): unknown[] {
  const d = before.filter((r) => r.kind === "d")
  const m = before.filter((r) => r.kind === "m")
  return [
    days[0],
    days[1],
    d.map((r) => r.key),
    d.map((r) => Number(r.ms)),
    d.map((r) => r.meters),
    ...COUNTER_COLS.map((c) => d.map((r) => r[c])),
    m.map((r) => r.key),
    m.map((r) => Number(r.ms)),
  ]
}

const upsertInto = (table: string, from: string) =>
  `INSERT INTO ${table} AS d (district, bucket, meters, ${COUNTER_COLS.join(", ")})
    ${from}
    ON CONFLICT (district, bucket) DO UPDATE SET meters = d.meters + EXCLUDED.meters,
      ${COUNTER_COLS.map((c) => `${c} = d.${c} + EXCLUDED.${c}`).join(", ")}`

/** Some counter of a summed row changed (a row with none changed needs no new version). */
const changed = `meters <> 0 OR ${COUNTER_COLS.map((c) => `${c} <> 0`).join(" OR ")}`

/**
 * After the batch's day rows are written: what the same rows add now, minus what they added
 * before (settleParams), added to the districts' days and months; and the new meter-months, each
 * in the district of its meter's first day row of the month. One lock order (district, bucket)
 * for concurrent ingest lanes: days, then months.
 */
export const SETTLE_SQL = (() => {
  const n = 4 + COUNTER_COLS.length
  const old = `unnest($3::text[], $4::float8[], $5::bigint[], ${COUNTER_COLS.map((_, i) => `$${6 + i}::bigint[]`).join(", ")})
      AS o(district, ms, meters, ${COUNTER_COLS.join(", ")})`
  return `WITH ${COUNT_ROWS},
    delta AS (
      SELECT district, bucket, sum(meters) AS meters, ${COUNTER_COLS.map((c) => `sum(${c}) AS ${c}`).join(", ")}
      FROM (SELECT * FROM g
        UNION ALL
        SELECT district, to_timestamp(ms / 1000), -meters, ${COUNTER_COLS.map((c) => `-${c}`).join(", ")} FROM ${old}) x
      GROUP BY district, bucket),
    nm AS (
      SELECT COALESCE((SELECT t.district FROM rollup_day t WHERE t.meter_id = u.meter_id
          AND t.bucket >= to_timestamp(u.ms / 1000) ORDER BY t.bucket LIMIT 1), '') AS district,
        to_timestamp(u.ms / 1000) AS bucket
      FROM unnest($${n + 2}::text[], $${n + 3}::float8[]) AS u(meter_id, ms)),
    days AS (${upsertInto(DISTRICT_DAY, `SELECT * FROM delta WHERE ${changed} ORDER BY district, bucket`)})
  ${upsertInto(
    DISTRICT_MONTH,
    `SELECT district, bucket, sum(meters), ${COUNTER_COLS.map((c) => `sum(${c})`).join(", ")} FROM (
      SELECT district, ${MONTH("bucket")} AS bucket, 0 AS meters, ${COUNTER_COLS.join(", ")} FROM delta
      UNION ALL
      SELECT district, bucket, 1, ${COUNTER_COLS.map(() => "0").join(", ")} FROM nm) x
    GROUP BY district, bucket HAVING ${changed.replace(/(\w+) <> 0/g, "sum($1) <> 0")}
    ORDER BY district, bucket`,
  )}`
})()

/**
 * The migration step: the month table filled from the district days (counters) and rollup_day
 * (each meter-month in the district of its first day row), and rollup_day's c_* columns dropped.
 */
export const DISTRICT_MONTH_STEP = [
  `CREATE TABLE IF NOT EXISTS ${DISTRICT_MONTH} (district text NOT NULL, bucket timestamptz NOT NULL,
     meters integer NOT NULL,
     ${DISTRICT_COUNTERS.map((c) => `${c} bigint NOT NULL, ${c}_rows integer NOT NULL`).join(", ")},
     PRIMARY KEY (district, bucket))`,
  `INSERT INTO ${DISTRICT_MONTH} (district, bucket, meters, ${COUNTER_COLS.join(", ")})
   SELECT district, bucket, sum(meters), ${COUNTER_COLS.map((c) => `sum(${c})`).join(", ")} FROM (
     SELECT district, ${MONTH("bucket")} AS bucket, 0 AS meters, ${COUNTER_COLS.join(", ")} FROM ${DISTRICT_DAY}
     UNION ALL
     SELECT district, month, count(*), ${COUNTER_COLS.map(() => "0").join(", ")} FROM (
       SELECT DISTINCT ON (meter_id, ${MONTH("bucket")}) COALESCE(district, '') AS district, ${MONTH("bucket")} AS month
       FROM rollup_day ORDER BY meter_id, ${MONTH("bucket")}, bucket) f
     GROUP BY district, month) x
   GROUP BY district, bucket`,
  `ALTER TABLE rollup_day ${C_COLS_DROPPED.map((c) => `DROP COLUMN IF EXISTS ${c}`).join(", ")}`,
]
