// Consumption rollups: per meter and UTC hour (rollup_hour) and UTC day (rollup_day), kept in
// the ingest transaction, so /consumption by hour, day or month reads them instead of readings.
//
// The rule (ConsumptionRow, store.ts) charges each reading its total minus the previous reading's
// total, which crosses bucket edges. So a rollup row keeps what lies inside its bucket — the sum
// for every reading but the first (`*_used`), the gap flag inside it — and the edges: the first
// reading's total and interval amount, the last reading's total and end. A query adds each row's
// first-reading charge against the previous row's last total: exact, whatever the range.
//
// A batch's rows are aggregated per (meter, bucket) in Node and merged into the stored row: after
// it (the usual case) or before it (a late backfill) by concatenation. When they interleave with
// the stored readings (a backfill into a gap inside the bucket, or equal times), the row is marked
// stale and rebuilt from that bucket's readings in the same transaction: nothing is lost.
import type { ReadingRow } from "./store.js"

export interface Rollup {
  table: "rollup_hour" | "rollup_day"
  unit: "hour" | "day"
  ms: number
}
export const ROLLUPS: readonly Rollup[] = [
  { table: "rollup_hour", unit: "hour", ms: 3_600_000 },
  { table: "rollup_day", unit: "day", ms: 86_400_000 },
]

/** A cumulative counter and its interval amount (the two the rule uses). */
const COUNTERS = [
  { name: "water", total: "water_total_ml", amount: "volume_ml", totalKey: "waterTotalMl", amountKey: "volumeMl" },
  { name: "energy", total: "energy_total_wh", amount: "energy_wh", totalKey: "energyTotalWh", amountKey: "energyWh" },
] as const
type Counter = (typeof COUNTERS)[number]
const firstTotal = (c: Counter) => `first_${c.total}`
const firstAmount = (c: Counter) => `first_${c.amount}`
const lastTotal = (c: Counter) => `last_${c.total}`
const used = (c: Counter) => `${c.name}_used`

/** A rollup row's columns after (meter_id, bucket), with their SQL types. */
const COLS: [string, string][] = [
  ["readings", "integer"],
  ["first_ts", "timestamptz"],
  ["last_ts", "timestamptz"],
  ["last_end", "timestamptz"],
  ...COUNTERS.flatMap((c): [string, string][] => [
    [firstTotal(c), "bigint"],
    [firstAmount(c), "bigint"],
    [lastTotal(c), "bigint"],
    [used(c), "bigint"],
  ]),
  ["reverse_ml", "bigint"],
  ["gap", "boolean"],
]
/** The columns of a rollup row, in the order of upsertSql's parameters and aggregate's arrays. */
export const ROLLUP_COLUMNS = ["meter_id", "bucket", ...COLS.map(([n]) => n)]

export const rollupDdl = (r: Rollup) =>
  `CREATE TABLE IF NOT EXISTS ${r.table} (meter_id text NOT NULL, bucket timestamptz NOT NULL,
     ${COLS.map(([n, t]) => `${n} ${t}${["readings", "first_ts", "last_ts", "last_end", "gap"].includes(n) ? " NOT NULL" : ""}`).join(", ")},
     stale boolean NOT NULL DEFAULT false, PRIMARY KEY (meter_id, bucket))`

/** The sum of the non-NULL terms; NULL when all are NULL (as sum() over rows). */
const nsum = (...xs: string[]) =>
  `CASE WHEN ${xs.map((x) => `(${x}) IS NULL`).join(" AND ")} THEN NULL ELSE ${xs.map((x) => `COALESCE(${x}, 0)`).join(" + ")} END`

/** What `later`'s first reading consumes after `earlier`'s last one (the rule, ConsumptionRow). */
const charge = (c: Counter, later: string, earlier: string) =>
  `CASE WHEN ${later}.${firstTotal(c)} >= ${earlier}.${lastTotal(c)} THEN ${later}.${firstTotal(c)} - ${earlier}.${lastTotal(c)} ELSE ${later}.${firstAmount(c)} END`

/**
 * Upserts a batch's aggregates (parameters: one array per ROLLUP_COLUMNS column); returns the (meter_id,
 * bucket) of rows left stale, to rebuild from readings.
 */
export const upsertSql = (r: Rollup): string => UPSERT_SQL.get(r.table) ?? makeUpsertSql(r)
function makeUpsertSql(r: Rollup): string {
  const app = `EXCLUDED.first_ts > t.last_ts`
  const pre = `EXCLUDED.last_ts < t.first_ts`
  const pick = (col: string, whenApp: string, whenPre: string) =>
    `${col} = CASE WHEN ${app} THEN ${whenApp} WHEN ${pre} THEN ${whenPre} ELSE t.${col} END`
  const sets = [
    pick("readings", "t.readings + EXCLUDED.readings", "t.readings + EXCLUDED.readings"),
    pick("first_ts", "t.first_ts", "EXCLUDED.first_ts"),
    pick("last_ts", "EXCLUDED.last_ts", "t.last_ts"),
    pick("last_end", "EXCLUDED.last_end", "t.last_end"),
    ...COUNTERS.flatMap((c) => [
      pick(firstTotal(c), `t.${firstTotal(c)}`, `EXCLUDED.${firstTotal(c)}`),
      pick(firstAmount(c), `t.${firstAmount(c)}`, `EXCLUDED.${firstAmount(c)}`),
      pick(lastTotal(c), `EXCLUDED.${lastTotal(c)}`, `t.${lastTotal(c)}`),
      pick(
        used(c),
        nsum(`t.${used(c)}`, `EXCLUDED.${used(c)}`, charge(c, "EXCLUDED", "t")),
        nsum(`t.${used(c)}`, `EXCLUDED.${used(c)}`, charge(c, "t", "EXCLUDED")),
      ),
    ]),
    pick("reverse_ml", nsum("t.reverse_ml", "EXCLUDED.reverse_ml"), nsum("t.reverse_ml", "EXCLUDED.reverse_ml")),
    pick(
      "gap",
      "t.gap OR EXCLUDED.gap OR EXCLUDED.first_ts > t.last_end",
      "t.gap OR EXCLUDED.gap OR t.first_ts > EXCLUDED.last_end",
    ),
    `stale = t.stale OR NOT (${app} OR ${pre})`,
  ]
  // times travel as epoch milliseconds (float8): cheaper to build and send than ISO strings
  const types = ["text", "timestamptz", ...COLS.map(([, t]) => t)].map((t) => (t === "timestamptz" ? "float8" : t))
  const cols = ROLLUP_COLUMNS.map((n, i) => (types[i] === "float8" ? `to_timestamp(u.${n} / 1000)` : `u.${n}`))
  // a new day row takes its meter's district now, and keeps it (district-rollups.ts)
  const day = r.unit === "day"
  return `WITH up AS (
    INSERT INTO ${r.table} AS t (${ROLLUP_COLUMNS.join(", ")}${day ? ", district" : ""})
    SELECT ${cols.join(", ")}${day ? ", COALESCE(m.district, '')" : ""}
    FROM unnest(${types.map((t, i) => `$${i + 1}::${t}[]`).join(", ")}) AS u(${ROLLUP_COLUMNS.join(", ")})
    ${day ? "LEFT JOIN meters m ON m.meter_id = u.meter_id" : ""}
    ON CONFLICT (meter_id, bucket) DO UPDATE SET ${sets.join(",\n      ")}
    RETURNING meter_id, bucket, stale)
  SELECT meter_id, bucket FROM up WHERE stale`
}

const UPSERT_SQL = new Map(ROLLUPS.map((r) => [r.table, makeUpsertSql(r)]))

/**
 * The rollup rows of readings `x` (FROM clause `from`), bucketed by `bucket` (an expression that
 * may use x and the FROM's other names).
 */
function aggregateSql(from: string, bucket: string): string {
  const order = `x.ts, x.boot, x.seq, x.idx`
  const win = `PARTITION BY x.meter_id, ${bucket}`
  return `SELECT meter_id, bucket, count(*)::integer AS readings, min(ts) AS first_ts, max(ts) AS last_ts,
      max(end_ts) FILTER (WHERE rn_desc = 1) AS last_end,
      ${COUNTERS.map(
        (c) => `max(${c.total}) FILTER (WHERE rn = 1) AS ${firstTotal(c)},
      max(${c.amount}) FILTER (WHERE rn = 1) AS ${firstAmount(c)},
      max(${c.total}) FILTER (WHERE rn_desc = 1) AS ${lastTotal(c)},
      sum(CASE WHEN ${c.total} >= prev_${c.total} THEN ${c.total} - prev_${c.total} ELSE ${c.amount} END)
        FILTER (WHERE rn > 1) AS ${used(c)}`,
      ).join(",\n      ")},
      sum(reverse_ml) AS reverse_ml, COALESCE(bool_or(ts > prev_end) FILTER (WHERE rn > 1), false) AS gap
    FROM (SELECT x.meter_id, ${bucket} AS bucket, x.ts, x.reverse_ml,
        x.ts + make_interval(secs => x.interval_s) AS end_ts,
        LAG(x.ts + make_interval(secs => x.interval_s)) OVER w AS prev_end,
        ${COUNTERS.map((c) => `x.${c.total}, x.${c.amount}, LAG(x.${c.total}) OVER w AS prev_${c.total}`).join(", ")},
        row_number() OVER w AS rn,
        row_number() OVER (${win} ORDER BY x.ts DESC, x.boot DESC, x.seq DESC, x.idx DESC) AS rn_desc
      FROM ${from}
      WINDOW w AS (${win} ORDER BY ${order})) s
    GROUP BY meter_id, bucket`
}

/** Fills a rollup from every stored reading (the migration step that adds rollups). */
export const fillSql = (r: Rollup) =>
  `INSERT INTO ${r.table} (${ROLLUP_COLUMNS.join(", ")})
   ${aggregateSql("readings x", `date_trunc('${r.unit}', x.ts, 'UTC')`)}`

/** Rebuilds the given rows ($1 meter ids, $2 buckets) from their readings. */
export const rebuildSql = (r: Rollup) =>
  `UPDATE ${r.table} AS t SET (${COLS.map(([n]) => n).join(", ")}, stale) =
     (${COLS.map(([n]) => `a.${n}`).join(", ")}, false)
   FROM (${aggregateSql(
     `unnest($1::text[], $2::timestamptz[]) AS k(meter_id, bucket)
       CROSS JOIN LATERAL readings_between(k.meter_id, k.bucket, k.bucket + interval '1 ${r.unit}') x`,
     "k.bucket",
   )}) a
   WHERE t.meter_id = a.meter_id AND t.bucket = a.bucket`

const byOrder = (a: ReadingRow, b: ReadingRow) =>
  a.ts.getTime() - b.ts.getTime() || a.boot - b.boot || a.seq - b.seq || a.idx - b.idx

const add = (a: number | null, b: number | null) => (a === null ? b : b === null ? a : a + b)

const sorted = (g: ReadingRow[]) => {
  for (let i = 1; i < g.length; i++) if (byOrder(g[i - 1], g[i]) > 0) return false
  return true
}

/**
 * A batch's rows aggregated per (meter, bucket): parameters of upsertSql, one array per column
 * (times as epoch milliseconds).
 */
export function aggregate(r: Rollup, rows: ReadingRow[]): unknown[][] {
  // rows come frame by frame: a run of one meter's readings mostly stays in one bucket, so the
  // map is consulted only when the run changes meter or bucket
  const groups = new Map<string, ReadingRow[]>()
  let runMeter = ""
  let runBucket = NaN
  let run: ReadingRow[] = []
  for (const x of rows) {
    const b = Math.floor(x.ts.getTime() / r.ms)
    if (x.meterId === runMeter && b === runBucket) {
      run.push(x)
      continue
    }
    const k = `${x.meterId}\u0000${b}`
    const g = groups.get(k)
    if (g) g.push(x)
    else groups.set(k, [x])
    runMeter = x.meterId
    runBucket = b
    run = g ?? groups.get(k)!
  }
  const out: unknown[][] = ROLLUP_COLUMNS.map(() => [])
  for (const g of groups.values()) {
    if (!sorted(g)) g.sort(byOrder)
    const first = g[0]
    const last = g[g.length - 1]
    let gap = false
    let reverse: number | null = null
    const usedBy = COUNTERS.map(() => null as number | null)
    for (let i = 0; i < g.length; i++) {
      const x = g[i]
      reverse = add(reverse, x.reverseMl)
      if (i === 0) continue
      const p = g[i - 1]
      if (x.ts.getTime() > p.ts.getTime() + p.intervalS * 1000) gap = true
      for (let j = 0; j < COUNTERS.length; j++) {
        const c = COUNTERS[j]
        const t = x[c.totalKey]
        const pt = p[c.totalKey]
        usedBy[j] = add(usedBy[j], t !== null && pt !== null && t >= pt ? t - pt : x[c.amountKey])
      }
    }
    const values: unknown[] = [
      first.meterId,
      Math.floor(first.ts.getTime() / r.ms) * r.ms,
      g.length,
      first.ts.getTime(),
      last.ts.getTime(),
      last.ts.getTime() + last.intervalS * 1000,
      ...COUNTERS.flatMap((c, j) => [first[c.totalKey], first[c.amountKey], last[c.totalKey], usedBy[j]]),
      reverse,
      gap,
    ]
    for (let i = 0; i < values.length; i++) out[i].push(values[i])
  }
  return out
}

/**
 * Consumption per output bucket from a rollup's rows `r` (with p_* = the previous row of the same
 * meter: LAG over bucket). `out` is the output bucket expression over r.bucket.
 */
export function consumptionSelect(out: string) {
  return `SELECT ${out} AS start,
      ${COUNTERS.map(
        (c) =>
          `${nsum(`sum(${used(c)})`, `sum(CASE WHEN ${firstTotal(c)} >= p_${c.total} THEN ${firstTotal(c)} - p_${c.total} ELSE ${firstAmount(c)} END)`)} AS ${c.name}`,
      ).join(", ")},
      sum(reverse_ml) AS reverse_ml, sum(readings) AS readings, bool_or(gap OR first_ts > p_end) AS gap,
      count(DISTINCT meter_id) AS meters`
}

/** The LAG columns consumptionSelect needs, over a window named w. */
export const PREVIOUS = `${COUNTERS.map((c) => `LAG(${lastTotal(c)}) OVER w AS p_${c.total}`).join(", ")}, LAG(last_end) OVER w AS p_end`

// Consumption per district and UTC day (rollup_district_day), so the fleet's consumption by day
// reads one row per district and day whatever the number of meters. Batches keep it with
// district-rollups.ts. settleDistrictsSql is the migration step that first filled it: each
// rollup_day row then recorded what it had added there (c_* columns, dropped by a later step) and
// the district it counted in, fixed at its first count so a meter that moves keeps its past days
// where they were measured.
export const DISTRICT_DAY = "rollup_district_day"
export const DISTRICT_COUNTERS = [...COUNTERS.map((c) => c.name), "reverse", "readings", "gap"] as const

/** The columns rollup_day gains, and the district table (migration step). */
export const districtDayDdl = [
  `ALTER TABLE rollup_day ADD COLUMN IF NOT EXISTS district text,
     ADD COLUMN IF NOT EXISTS counted boolean NOT NULL DEFAULT false,
     ${DISTRICT_COUNTERS.map((c) => `ADD COLUMN IF NOT EXISTS c_${c} bigint`).join(", ")}`,
  `CREATE TABLE IF NOT EXISTS ${DISTRICT_DAY} (district text NOT NULL, bucket timestamptz NOT NULL,
     meters integer NOT NULL,
     ${DISTRICT_COUNTERS.map((c) => `${c} bigint NOT NULL, ${c}_rows integer NOT NULL`).join(", ")},
     PRIMARY KEY (district, bucket))`,
]

/**
 * What a rollup_day row `t` adds to its district's day, with `p` its meter's previous row (NULL
 * for the first): [counter, SQL expression] in DISTRICT_COUNTERS order.
 */
export const CONTRIBUTIONS: [string, string][] = [
  ...COUNTERS.map((c): [string, string] => [
    c.name,
    nsum(
      `t.${used(c)}`,
      `CASE WHEN t.${firstTotal(c)} >= p.${lastTotal(c)} THEN t.${firstTotal(c)} - p.${lastTotal(c)} ELSE t.${firstAmount(c)} END`,
    ),
  ]),
  ["reverse", "t.reverse_ml"],
  ["readings", "t.readings"],
  ["gap", "CASE WHEN t.gap OR COALESCE(t.first_ts > p.last_end, false) THEN 1 ELSE 0 END"],
]

/**
 * Counts again the rollup_day rows that `keys` (a SELECT of meter_id, bucket) names and the next
 * row of each, and adds the differences to rollup_district_day. '' is the district of meters
 * without one.
 */
export function settleDistrictsSql(keys: string): string {
  const fresh = CONTRIBUTIONS
  const delta = (c: string) => `COALESCE(f.n_${c}, 0) - COALESCE(f.c_${c}, 0)`
  const rows = (c: string) =>
    `(CASE WHEN f.n_${c} IS NULL THEN 0 ELSE 1 END) - (CASE WHEN f.c_${c} IS NULL THEN 0 ELSE 1 END)`
  return `WITH k AS (${keys}),
    a AS (
      SELECT meter_id, bucket FROM k
      UNION
      SELECT n.meter_id, n.bucket FROM k CROSS JOIN LATERAL (
        SELECT t.meter_id, t.bucket FROM rollup_day t WHERE t.meter_id = k.meter_id AND t.bucket > k.bucket
        ORDER BY t.bucket LIMIT 1) n),
    f AS (
      SELECT t.meter_id, t.bucket, t.counted,
        CASE WHEN t.counted THEN t.district ELSE COALESCE(m.district, '') END AS district,
        ${fresh.map(([c, e]) => `${e} AS n_${c}, t.c_${c}`).join(",\n        ")}
      FROM a JOIN rollup_day t ON t.meter_id = a.meter_id AND t.bucket = a.bucket
      LEFT JOIN meters m ON m.meter_id = t.meter_id
      LEFT JOIN LATERAL (
        SELECT * FROM rollup_day q WHERE q.meter_id = t.meter_id AND q.bucket < t.bucket
        ORDER BY q.bucket DESC LIMIT 1) p ON true),
    counted AS (
      UPDATE rollup_day t SET counted = true, district = f.district,
        ${fresh.map(([c]) => `c_${c} = f.n_${c}`).join(", ")}
      FROM f WHERE t.meter_id = f.meter_id AND t.bucket = f.bucket)
    INSERT INTO ${DISTRICT_DAY} AS d (district, bucket, meters, ${DISTRICT_COUNTERS.map((c) => `${c}, ${c}_rows`).join(", ")})
    SELECT district, bucket, sum(CASE WHEN counted THEN 0 ELSE 1 END),
      ${DISTRICT_COUNTERS.map((c) => `sum(${delta(c)}), sum(${rows(c)})`).join(", ")}
    FROM f GROUP BY district, bucket
    ORDER BY district, bucket -- one lock order for concurrent ingest lanes
    ON CONFLICT (district, bucket) DO UPDATE SET meters = d.meters + EXCLUDED.meters,
      ${DISTRICT_COUNTERS.map((c) => `${c} = d.${c} + EXCLUDED.${c}, ${c}_rows = d.${c}_rows + EXCLUDED.${c}_rows`).join(", ")}`
}

/**
 * The fleet's (or one district's) consumption per UTC day from rollup_district_day, or per UTC
 * month from rollup_district_month (district-rollups.ts). $1 from, $2 to (either may be NULL), $3
 * district (NULL: every district). Sums of NULL-only counters stay NULL, as in consumptionSelect.
 */
export function districtConsumptionSql(table = DISTRICT_DAY): string {
  const total = (c: string) => `CASE WHEN sum(${c}_rows) = 0 THEN NULL ELSE sum(${c}) END`
  return `SELECT bucket AS start,
      ${COUNTERS.map((c) => `${total(c.name)} AS ${c.name}`).join(", ")},
      ${total("reverse")} AS reverse_ml, sum(readings) AS readings, sum(gap) > 0 AS gap, sum(meters) AS meters
    FROM ${table}
    WHERE ($1::timestamptz IS NULL OR bucket >= $1) AND ($2::timestamptz IS NULL OR bucket < $2)
      AND ($3::text IS NULL OR district = $3)
    GROUP BY 1 ORDER BY 1`
}
