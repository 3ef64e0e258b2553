// One meter's readings as columns (issue 24: a meter's year of 15-minute readings within 100 ms).
// The row form (readings.ts) decodes blocks in SQL and moves each reading to Node as a row and
// then as an object: 35,040 of them took 1.0–2.6 s. Here the hot rows come as one string per
// column (array_agg in SQL) and each compacted block as its coded arrays, decoded in Node
// (decodeBlock, the inverse of encodeBlock); the two sorted streams are merged by readings' order
// (ts, boot, seq, idx). The values are those of readings() (a test compares them, both engines,
// before and after compaction, with late rows beside a compacted month).
import { BLOCK_COLUMNS, decodeBlock } from "./blocks.js"
import type { Db } from "./db.js"
import type { BlockValue, ReadingColumns } from "./reading-columns-store.js"
import type { ReadingQuery, ReadingRow } from "./store.js"

/** The columns of a reading but meterId, in READING_COLUMNS order. */
export type ReadingColumnKey = Exclude<keyof ReadingRow, "meterId">
export const READING_COLUMN_KEYS = BLOCK_COLUMNS.map((c) => c.key as ReadingColumnKey)

const FROM = `COALESCE($2::timestamptz, '-infinity')`
const TO = `COALESCE($3::timestamptz, 'infinity')`
// The blocks a range touches, in month order, with their sizes (no array detoasted)
const BLOCK_LIST_SQL = `SELECT month, n FROM reading_blocks
  WHERE meter_id = $1 AND month >= date_trunc('month', ${FROM}, 'UTC') AND month < ${TO}
    AND last_ts >= ${FROM} AND first_ts < ${TO}
  ORDER BY month`
/** Readings at which a read of blocks is split in two statements that run side by side. */
const SPLIT_AT = 8_000

type Column = (typeof BLOCK_COLUMNS)[number]
/** What a read needs besides the columns asked for: the order's, and those they are coded against. */
const ORDER_KEYS: readonly ReadingColumnKey[] = ["ts", "boot", "seq", "idx"]
function needs(c: Column): string[] {
  const k = c.coding
  if (k.kind === "counter") return [BLOCK_COLUMNS.find((x) => x.column === k.amountColumn)!.key]
  if (k.kind === "spread") return ["pressureAvgPa"]
  return []
}

/** The statements of a read of some columns (the same few selections recur: kept by their key list). */
export interface Selection {
  columns: Column[]
  blocks: string
  hot: string
}
const selections = new Map<string, Selection>()
export function selection(keys: readonly ReadingColumnKey[] = READING_COLUMN_KEYS): Selection {
  const id = keys.join(",")
  const known = selections.get(id)
  if (known) return known
  const wanted = new Set<string>([...ORDER_KEYS, ...keys])
  for (const c of BLOCK_COLUMNS) if (wanted.has(c.key)) for (const k of needs(c)) wanted.add(k)
  const columns = BLOCK_COLUMNS.filter((c) => wanted.has(c.key))
  const made: Selection = {
    columns,
    // each array in PostgreSQL's text form, cast to text so that the driver does not parse it (its
    // array parser took 6–16× parseArray's time on a year's arrays), and not array_send's binary
    // form: as costly for the engine (44–47 ms against 45–64 ms for a meter's year at load 3) and
    // 2–3× the bytes, as hex
    blocks: `SELECT (extract(epoch FROM month) * 1000)::float8 AS month_ms, n,
        ${columns.map((c) => `${c.array}::text AS ${c.array}`).join(", ")}
      FROM reading_blocks WHERE meter_id = $1 AND month = ANY($2::timestamptz[])
      ORDER BY month`,
    // the hot rows in order (o), each column aggregated in that order; ts as epoch µs
    hot: `SELECT count(*)::int AS n, ${columns.map((c) => `array_agg(${c.array} ORDER BY o)::text AS ${c.array}`).join(", ")}
      FROM (SELECT *, (extract(epoch FROM ts) * 1000000)::bigint AS ts_us,
              row_number() OVER (ORDER BY ts, boot, seq, idx) AS o
            FROM readings WHERE meter_id = $1 AND ts >= ${FROM} AND ts < ${TO}
            ORDER BY ts, boot, seq, idx LIMIT $4) r`,
  }
  selections.set(id, made)
  return made
}

type TextRow = Record<string, string | null>

const [OPEN, DIGIT0, DIGIT9, MINUS, NULL_N, TRUE_T, FALSE_F] = ["{", "0", "9", "-", "N", "t", "f"].map((c) =>
  c.charCodeAt(0),
)

/**
 * A one-dimensional array of integer, bigint or boolean in PostgreSQL's text form ({1,-2,NULL},
 * {t,f}; lower bound 1, so no dimension prefix), or NULL (n NULLs). bigint values are below 2^53
 * in magnitude (columns.ts bounds them), so a double holds each exactly.
 */
export function parseArray(text: string | null, n: number): BlockValue[] {
  if (text === null) return new Array<BlockValue>(n).fill(null)
  if (text.charCodeAt(0) !== OPEN) throw new Error(`reading block: not a one-dimensional array: ${text.slice(0, 20)}`)
  const out = new Array<BlockValue>(n)
  let k = 0
  for (let i = 1; i < text.length - 1; i++) {
    let c = text.charCodeAt(i)
    if (c === NULL_N) {
      out[k++] = null
      i += 4
    } else if (c === TRUE_T || c === FALSE_F) {
      out[k++] = c === TRUE_T
      i++
    } else {
      const negative = c === MINUS
      if (negative) c = text.charCodeAt(++i)
      let v = 0
      for (; c >= DIGIT0 && c <= DIGIT9; c = text.charCodeAt(++i)) v = v * 10 + (c - DIGIT0)
      out[k++] = negative ? -v : v
    }
    // i is at the comma (or the closing brace)
  }
  if (k !== n) throw new Error(`reading block: ${k} elements where the block says ${n}`)
  return out
}

/** Readings of one source, ts as epoch µs (the `ts` column), sorted by readings' order. */
type Run = Record<ReadingColumnKey, BlockValue[]> & { length: number }

function run(columns: Record<string, BlockValue[]>, length: number): Run {
  return Object.assign(columns, { length }) as Run
}

/** The first `limit` readings of a meter with ts in [from, to), as columns. */
export async function readingColumns(
  db: Db,
  meterId: string,
  q: ReadingQuery = {},
  o: { splitAt?: number } = {},
): Promise<ReadingColumns> {
  const out = await exactColumns(db, meterId, q, o)
  // µs (the order) to ms (the API's precision, as readings() gives it: truncated)
  const ts = out.columns.ts
  for (let i = 0; i < ts.length; i++) ts[i] = Math.floor((ts[i] as number) / 1000)
  return out
}

/**
 * As readingColumns, ts in epoch microseconds (as stored); with `keys`, those columns only (and
 * the order's: ts, boot, seq, idx), so that the engine writes and Node parses no more. With `cap`:
 * when the blocks alone hold more than `cap` readings of the range, no array is read and the
 * answer is their count with no columns (a caller with a memory bound learns it for 2 ms, not
 * after reading them).
 */
export async function exactColumns(
  db: Db,
  meterId: string,
  q: ReadingQuery = {},
  { splitAt = SPLIT_AT, keys, cap }: { splitAt?: number; keys?: readonly ReadingColumnKey[]; cap?: number } = {},
): Promise<ReadingColumns> {
  const sel = selection(keys)
  const from = q.from ?? null
  const to = q.to ?? null
  const limit = q.limit ?? 10000
  const fromUs = from ? from.getTime() * 1000 : -Infinity
  const toUs = to ? to.getTime() * 1000 : Infinity
  // the blocks that hold the first `limit` readings from `from` (the first may begin before it)
  const list = (await db.query<{ month: Date; n: number }>(BLOCK_LIST_SQL, [meterId, from, to])).rows
  const months: Date[] = []
  let counted = 0
  for (const [i, b] of list.entries()) {
    if (i > 0 && counted >= limit) break
    months.push(b.month)
    if (i > 0) counted += b.n
  }
  if (cap !== undefined && counted > cap) return { count: counted, columns: {} }
  // the hot rows beside the blocks; the blocks in two statements when they are many (two
  // backends decode the engine's text side by side; PGlite runs them one after the other)
  const half = months.length > 1 && counted > splitAt ? Math.ceil(months.length / 2) : months.length
  const groups = [months.slice(0, half), months.slice(half)].filter((g) => g.length)
  const [{ rows: hot }, ...fetched] = await Promise.all([
    db.query<HotRow>(sel.hot, [meterId, from, to, limit]),
    ...groups.map((g) => db.query<BlockRow>(sel.blocks, [meterId, g])),
  ])
  return columnsOf(
    sel,
    hot[0],
    fetched.flatMap((f) => f.rows),
    fromUs,
    toUs,
    limit,
  )
}

/** A meter's hot rows as one row of aggregated arrays (n: how many), as Selection.hot reads them. */
export type HotRow = TextRow & { n: number }
/** A block's coded arrays as text, as Selection.blocks reads them. */
export type BlockRow = TextRow & { month_ms: number; n: number }

/**
 * One meter's first `limit` readings with ts (epoch µs) in [fromUs, toUs), as columns, from its
 * hot rows (undefined: none) and its blocks as fetched (in month order): each decoded, the two
 * forms merged in readings' order.
 */
export function columnsOf(
  sel: Selection,
  hot: HotRow | undefined,
  blocks: readonly BlockRow[],
  fromUs: number,
  toUs: number,
  limit: number,
): ReadingColumns {
  const runs: Run[] = []
  const n = Number(hot?.n ?? 0)
  if (hot && n) {
    const cols: Record<string, BlockValue[]> = {}
    for (const c of sel.columns) cols[c.key] = parseArray(hot[c.array], n)
    runs.push(run(cols, n))
  }
  for (const b of blocks) {
    // a column not read is undefined (decodeBlock skips it), one NULL throughout null
    const arrays = BLOCK_COLUMNS.map((c) =>
      !sel.columns.includes(c) ? undefined : b[c.array] === null ? null : parseArray(b[c.array], b.n),
    )
    const block = decodeBlock(Number(b.month_ms), b.n, arrays)
    const ts = block.ts as number[]
    // the block's readings in [from, to): a contiguous run of its sorted times
    let i0 = 0
    while (i0 < ts.length && ts[i0] < fromUs) i0++
    let i1 = i0
    while (i1 < ts.length && ts[i1] < toUs) i1++
    if (i1 > i0) {
      const whole = i0 === 0 && i1 === ts.length
      const cols: Record<string, BlockValue[]> = {}
      for (const c of sel.columns) cols[c.key] = whole ? block[c.key] : block[c.key].slice(i0, i1)
      runs.push(run(cols, i1 - i0))
    }
  }
  return merge(runs, limit, sel.columns)
}

/** Merges runs (each sorted by ts, boot, seq, idx) into the first `limit` readings. */
function merge(runs: Run[], limit: number, columns: readonly Column[]): ReadingColumns {
  const chunks: { run: Run; from: number; to: number }[] = []
  const at = runs.map(() => 0)
  const order = (a: Run, i: number, b: Run, j: number) =>
    (a.ts[i] as number) - (b.ts[j] as number) ||
    (a.boot[i] as number) - (b.boot[j] as number) ||
    (a.seq[i] as number) - (b.seq[j] as number) ||
    (a.idx[i] as number) - (b.idx[j] as number)
  let count = 0
  while (count < limit) {
    // the run with the first head, and the run with the second (it bounds how far the first goes)
    let best = -1
    let next = -1
    for (let r = 0; r < runs.length; r++) {
      if (at[r] >= runs[r].length) continue
      if (best < 0 || order(runs[r], at[r], runs[best], at[best]) < 0) {
        next = best
        best = r
      } else if (next < 0 || order(runs[r], at[r], runs[next], at[next]) < 0) next = r
    }
    if (best < 0) break
    // the best run's readings up to the other runs' first head go at once (runs rarely interleave)
    const src = runs[best]
    const cap = Math.min(src.length, at[best] + (limit - count))
    let end = at[best] + 1
    if (next < 0) end = cap
    else while (end < cap && order(src, end, runs[next], at[next]) < 0) end++
    chunks.push({ run: src, from: at[best], to: end })
    count += end - at[best]
    at[best] = end
  }
  const out: Record<string, BlockValue[]> = {}
  for (const { key } of columns) {
    const k = key as ReadingColumnKey
    const parts = chunks.map(({ run, from, to }) => (from === 0 && to === run.length ? run[k] : run[k].slice(from, to)))
    out[k] = parts.length === 1 ? parts[0] : ([] as BlockValue[]).concat(...parts)
  }
  return { count, columns: out }
}
