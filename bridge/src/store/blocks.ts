// The cold form of readings (issue 24): one row per meter and UTC month in reading_blocks, each
// reading column an array in (ts, boot, seq, idx) order, coded so that PostgreSQL's own TOAST
// compression (pglz) finds runs: times, seq numbers, voltages and mean pressures as differences
// from the previous value, counter registers as what the interval amount does not explain (0 for
// a meter that counts right), pressure extremes as their distance from the mean. A channel the
// meter never sent in the month is a NULL array (1 bit). Compaction (compaction.ts) codes in Node;
// reads decode in SQL (DECODED below), so every query reads both forms through one path:
// readings_between(meter, from, to) and the view readings_all, which unite the hot rows of
// `readings` with the decoded blocks.
import { READING_COLUMNS } from "./columns.js"
import type { BlockValue } from "./reading-columns-store.js"
import type { ReadingRow } from "./store.js"

/** How a column is coded in its block array. */
type Coding =
  | { kind: "raw" }
  /** Difference from the previous non-NULL value (the first: from 0). */
  | { kind: "delta" }
  /** Microseconds from the previous reading's ts (the first: from the block's month). */
  | { kind: "time" }
  /** register − previous non-NULL register − the interval's amount (NULL amount: 0). */
  | { kind: "counter"; amount: keyof ReadingRow & string; amountColumn: string }
  /** mean − value (min) or value − mean (max) where the mean is not NULL, else the value. */
  | { kind: "spread"; sign: 1 | -1 }

const CODING: Record<string, Coding> = {
  ts: { kind: "time" },
  seq: { kind: "delta" },
  water_total_ml: { kind: "counter", amount: "volumeMl", amountColumn: "volume_ml" },
  energy_total_wh: { kind: "counter", amount: "energyWh", amountColumn: "energy_wh" },
  voltage_dv: { kind: "delta" },
  pressure_avg_pa: { kind: "delta" },
  pressure_min_pa: { kind: "spread", sign: -1 },
  pressure_max_pa: { kind: "spread", sign: 1 },
}
const codingOf = (column: string): Coding => CODING[column] ?? { kind: "raw" }

/** The block's array columns: every reading column but meter_id, in READING_COLUMNS order. */
export const BLOCK_COLUMNS = READING_COLUMNS.filter((c) => c.column !== "meter_id").map((c) => ({
  ...c,
  array: c.column === "ts" ? "ts_us" : c.column,
  elem: c.column === "ts" ? "bigint" : c.sql,
  coding: codingOf(c.column),
}))

export const BLOCKS_DDL = [
  `CREATE TABLE IF NOT EXISTS reading_blocks (meter_id text NOT NULL, month timestamptz NOT NULL,
     n integer NOT NULL, first_ts timestamptz NOT NULL, last_ts timestamptz NOT NULL,
     ${BLOCK_COLUMNS.map((c) => `${c.array} ${c.elem}[]${c.nullable ? "" : " NOT NULL"}`).join(", ")},
     PRIMARY KEY (meter_id, month))`,
  // where the hourly rollup is complete: its rows before the horizon were dropped by compaction
  `CREATE TABLE IF NOT EXISTS compaction_state (one boolean PRIMARY KEY DEFAULT true CHECK (one),
     horizon timestamptz NOT NULL)`,
  `INSERT INTO compaction_state (horizon) VALUES ('-infinity') ON CONFLICT DO NOTHING`,
]

const w = `OVER w`
/** Element g of a block's array (detoasted once per block into `a`, below). */
const at = (array: string) => `a.${array}[g]`
const arrayOf = (column: string) => BLOCK_COLUMNS.find((c) => c.column === column)!.array

/**
 * A running sum over the block (window w). Sums of bigint are numeric in PostgreSQL, twice as slow
 * here as float8's; every partial sum is an integer below 2^53 (times in µs within a month, seq
 * numbers, registers ≤ 1e14: columns.ts bounds), which float8 holds exactly.
 */
const running = (x: string, sql: string) =>
  sql === "integer" ? `(sum(${x}) ${w})::integer` : `(sum((${x})::float8) ${w})::bigint`

/** A reading column's value decoded from its block array (window w: the block in order). */
function decodeExpr(c: (typeof BLOCK_COLUMNS)[number]): string {
  const u = at(c.array)
  switch (c.coding.kind) {
    case "raw":
      return u
    case "time":
      return `b.month + sum((${u})::float8) ${w} * interval '1 microsecond'`
    case "delta":
      return `CASE WHEN ${u} IS NULL THEN NULL ELSE ${running(u, c.sql)} END`
    case "counter":
      return `CASE WHEN ${u} IS NULL THEN NULL ELSE ${running(`${u} + COALESCE(${at(arrayOf(c.coding.amountColumn))}, 0)`, c.sql)} END`
    case "spread": {
      const avg = at(arrayOf("pressure_avg_pa"))
      const mean = running(avg, "integer")
      return `CASE WHEN ${avg} IS NULL THEN ${u} ELSE ${mean} ${c.coding.sign < 0 ? "-" : "+"} ${u} END`
    }
  }
}

/**
 * Every reading of the blocks `b` (a FROM item named b), as readings' columns after meter_id, in
 * table order: callers select b.meter_id beside d.*, so that a condition on meter_id reaches the
 * blocks' index (a view's meter_id taken from d stayed a filter over every decoded block). Each array is detoasted once per block (`x || '{}'` returns a plain copy; OFFSET 0 keeps it
 * from being inlined into every reference), then read by subscript: a multi-array unnest
 * materialised every array apart and was 6× slower.
 */
export const DECODED = `CROSS JOIN LATERAL (
    SELECT ${BLOCK_COLUMNS.map((c) => `b.${c.array} || '{}'::${c.elem}[] AS ${c.array}`).join(", ")} OFFSET 0) a
  CROSS JOIN LATERAL (
    SELECT ${BLOCK_COLUMNS.map((c) => `${decodeExpr(c)} AS ${c.column}`).join(",\n      ")}
    FROM generate_series(1, b.n) AS g
    WINDOW w AS (ORDER BY g ROWS UNBOUNDED PRECEDING)) d`

/**
 * The one read path of readings (schema step). readings_between(meter, from, to): a meter's
 * readings with ts in [from, to), hot rows and the blocks of the months the range touches (inlined
 * by the planner: a LANGUAGE sql STABLE function of one SELECT). reading_ts_before(meter, t): the
 * last reading's ts before t, decoding at most the block of t's month. readings_all: every
 * reading (a meter_id condition reaches both sides; a time condition does not prune blocks).
 */
export const READ_PATH_DDL = [
  `CREATE OR REPLACE FUNCTION readings_between(m text, t0 timestamptz, t1 timestamptz)
   RETURNS SETOF readings LANGUAGE sql STABLE AS $$
     SELECT * FROM readings r WHERE r.meter_id = m AND r.ts >= t0 AND r.ts < t1
     UNION ALL
     SELECT b.meter_id, d.* FROM reading_blocks b ${DECODED}
     WHERE b.meter_id = m AND b.month >= date_trunc('month', t0, 'UTC') AND b.month < t1
       AND b.last_ts >= t0 AND b.first_ts < t1 AND d.ts >= t0 AND d.ts < t1
   $$`,
  `CREATE OR REPLACE FUNCTION reading_ts_before(m text, t timestamptz)
   RETURNS timestamptz LANGUAGE sql STABLE AS $$
     SELECT max(x) FROM (
       SELECT max(ts) AS x FROM readings WHERE meter_id = m AND ts < t
       UNION ALL SELECT max(last_ts) FROM reading_blocks WHERE meter_id = m AND last_ts < t
       UNION ALL SELECT max(d.ts) FROM reading_blocks b CROSS JOIN LATERAL (
           SELECT b.month + (sum(u.t) OVER (ORDER BY u.o ROWS UNBOUNDED PRECEDING))::float8 * interval '1 microsecond' AS ts
           FROM unnest(b.ts_us) WITH ORDINALITY AS u(t, o)) d
         WHERE b.meter_id = m AND b.first_ts < t AND b.last_ts >= t AND d.ts < t) s
   $$`,
  `CREATE OR REPLACE VIEW readings_all AS
     SELECT * FROM readings UNION ALL SELECT b.meter_id, d.* FROM reading_blocks b ${DECODED}`,
]

/** The first of the UTC month of t. */
export const monthStart = (t: number) => {
  const d = new Date(t)
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1)
}

/** A reading as compaction reads it: ts to the microsecond (epoch µs), the rest as ReadingRow. */
export interface ExactReading extends ReadingRow {
  tsUs: number
}

export const byKey = (a: ExactReading, b: ExactReading) =>
  a.tsUs - b.tsUs || a.boot - b.boot || a.seq - b.seq || a.idx - b.idx

/**
 * One meter-month's readings (sorted with byKey, all in the month) coded as reading_blocks'
 * columns after meter_id and month: n, first_ts, last_ts, then one array per BLOCK_COLUMNS entry
 * (NULL where every value is NULL).
 */
export function encodeBlock(rows: readonly ExactReading[], monthMs: number): unknown[] {
  const arrays: unknown[] = []
  for (const c of BLOCK_COLUMNS) {
    const out: (number | boolean | null)[] = new Array(rows.length)
    let prev = 0
    let prevUs = monthMs * 1000
    let any = false
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i]
      const v = r[c.key] as number | boolean | null
      if (v !== null) any = true
      const k = c.coding
      switch (k.kind) {
        case "raw":
          out[i] = v
          break
        case "time":
          out[i] = r.tsUs - prevUs
          prevUs = r.tsUs
          break
        case "delta":
          if (v === null) out[i] = null
          else {
            out[i] = (v as number) - prev
            prev = v as number
          }
          break
        case "counter":
          if (v === null) out[i] = null
          else {
            out[i] = (v as number) - prev - ((r[k.amount] as number | null) ?? 0)
            prev = v as number
          }
          break
        case "spread": {
          const mean = r.pressureAvgPa
          out[i] = v === null ? null : mean === null ? v : k.sign < 0 ? mean - (v as number) : (v as number) - mean
          break
        }
      }
    }
    arrays.push(any || !c.nullable ? out : null)
  }
  const first = rows[0]
  const last = rows[rows.length - 1]
  return [rows.length, usIso(first.tsUs), usIso(last.tsUs), ...arrays]
}

/** BLOCK_COLUMNS' indexes, pressure extremes last: they are coded against the decoded mean (a counter's amount is raw). */
const DECODE_ORDER = [...BLOCK_COLUMNS.keys()].sort(
  (a, b) => +(BLOCK_COLUMNS[a].coding.kind === "spread") - +(BLOCK_COLUMNS[b].coding.kind === "spread"),
)

/**
 * One block decoded in Node, the inverse of encodeBlock (and the same values as DECODED's):
 * `arrays` in BLOCK_COLUMNS order (null: the column was NULL throughout), each of n elements.
 * Returns each column by its ReadingRow key; ts as epoch microseconds. An undefined array (a
 * column not read) is left out, and so are the columns coded against it. Decodes in place: the
 * arrays given become the columns (a year's read allocated twice over without it, and spent its
 * time in garbage collection).
 */
export function decodeBlock(monthMs: number, n: number, arrays: (BlockValue[] | null | undefined)[]) {
  const out: Record<string, BlockValue[]> = {}
  const coded = (column: string) => arrays[BLOCK_COLUMNS.findIndex((c) => c.column === column)]
  for (const ci of DECODE_ORDER) {
    const c = BLOCK_COLUMNS[ci]
    const u = arrays[ci]
    if (u === undefined) continue // not read
    if (u === null) {
      out[c.key] = new Array<BlockValue>(n).fill(null)
      continue
    }
    out[c.key] = u
    const k = c.coding
    if (k.kind === "time") {
      // a NULL time (never written) keeps the previous one
      let sum = monthMs * 1000
      for (let i = 0; i < n; i++) u[i] = sum += (u[i] as number | null) ?? 0
    } else if (k.kind === "delta") {
      // SQL's running sum skips NULLs; a NULL stays NULL
      let sum = 0
      for (let i = 0; i < n; i++) if (u[i] !== null) u[i] = sum += u[i] as number
    } else if (k.kind === "counter") {
      const amounts = coded(k.amountColumn)
      let sum = 0
      for (let i = 0; i < n; i++)
        if (u[i] !== null) u[i] = sum += (u[i] as number) + (((amounts ? amounts[i] : null) as number | null) ?? 0)
    } else if (k.kind === "spread") {
      const mean = out.pressureAvgPa
      for (let i = 0; i < n; i++) {
        const x = u[i] as number | null
        const m = mean[i] as number | null
        if (x !== null && m !== null) u[i] = k.sign < 0 ? m - x : m + x
      }
    }
  }
  return out
}

/** An epoch-microsecond time as an ISO 8601 literal PostgreSQL reads exactly. */
export function usIso(us: number): string {
  const ms = Math.floor(us / 1000)
  const iso = new Date(ms).toISOString() // …SS.mmmZ
  return `${iso.slice(0, -1)}${String(us - ms * 1000).padStart(3, "0")}Z`
}
