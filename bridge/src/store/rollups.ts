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
const NAMES = ["meter_id", "bucket", ...COLS.map(([n]) => n)]

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
 * Upserts a batch's aggregates (parameters: one array per NAMES column); returns the (meter_id,
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
  const cols = NAMES.map((n, i) => (types[i] === "float8" ? `to_timestamp(u.${n} / 1000)` : `u.${n}`))
  return `WITH up AS (
    INSERT INTO ${r.table} AS t (${NAMES.join(", ")})
    SELECT ${cols.join(", ")} FROM unnest(${types.map((t, i) => `$${i + 1}::${t}[]`).join(", ")}) AS u(${NAMES.join(", ")})
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
  `INSERT INTO ${r.table} (${NAMES.join(", ")})
   ${aggregateSql("readings x", `date_trunc('${r.unit}', x.ts, 'UTC')`)}`

/** Rebuilds the given rows ($1 meter ids, $2 buckets) from their readings. */
export const rebuildSql = (r: Rollup) =>
  `UPDATE ${r.table} AS t SET (${COLS.map(([n]) => n).join(", ")}, stale) =
     (${COLS.map(([n]) => `a.${n}`).join(", ")}, false)
   FROM (${aggregateSql(
     `unnest($1::text[], $2::timestamptz[]) AS k(meter_id, bucket)
       JOIN readings x ON x.meter_id = k.meter_id AND x.ts >= k.bucket AND x.ts < k.bucket + interval '1 ${r.unit}'`,
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
  const out: unknown[][] = NAMES.map(() => [])
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
