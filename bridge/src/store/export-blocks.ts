// The bulk export of a period that compaction moved into blocks (issue 24 item 4). COPY over
// readings_between decodes each block in SQL, a window sum per value: 5.6 µs of engine time a
// reading, 1.6× the rows' (bench/README.md). Here the engine only writes each block's arrays as
// text, and the bridge decodes them (reading-columns.ts, the path of the columns route) and writes
// the lines: the same bytes as the rows' COPY (tests/store/compaction-api.test.ts compares the
// files before and after compaction, both engines). PostgreSQL: one statement for the file, read
// through a cursor a batch of rows at a time; PGlite: keyset batches of meters, each a statement.
// Either way at most a batch of blocks and one meter's lines are in memory.
import { READING_COLUMNS } from "./columns.js"
import type { Db } from "./db.js"
import type { ExportFormat } from "./export-store.js"
import { columnsOf, selection, type BlockRow, type HotRow } from "./reading-columns.js"
import type { BlockValue } from "./reading-columns-store.js"

const ALL = selection()
/** Rows (a meter's hot rows, or one of its blocks: up to ≈ 150 kB of text each) per FETCH. */
const FETCH_ROWS = 64
/** Meters per keyset batch (PGlite). */
const KEYSET_METERS = 32

const IN_RANGE = `month >= date_trunc('month', $1::timestamptz, 'UTC') AND month < $2
  AND last_ts >= $1 AND first_ts < $2`

/** Whether a block holds readings of [$1, $2): then the file is read from the blocks (and the rows beside them). */
const ANY_BLOCK = `SELECT EXISTS (SELECT 1 FROM reading_blocks WHERE ${IN_RANGE}) AS any`

/**
 * Registered meters after $3 (at most $4; NULL: all) in meter id order (OFFSET 0: the loop keeps
 * it), each with its hot rows of [$1, $2) aggregated (part 0, as Selection.hot reads them) and
 * its blocks that the range touches (part 1).
 */
const METER_ROWS = `SELECT m.meter_id, x.part, x.month_ms, x.n, ${ALL.columns.map((c) => `x.${c.array}`).join(", ")}
  FROM (SELECT meter_id FROM meters WHERE meter_id > $3 ORDER BY meter_id LIMIT $4 OFFSET 0) m
  CROSS JOIN LATERAL (
    SELECT 0 AS part, NULL::float8 AS month_ms, count(*)::int AS n,
      ${ALL.columns.map((c) => `array_agg(${c.array} ORDER BY o)::text AS ${c.array}`).join(", ")}
    FROM (SELECT *, (extract(epoch FROM ts) * 1000000)::bigint AS ts_us,
            row_number() OVER (ORDER BY ts, boot, seq, idx) AS o
          FROM readings r WHERE r.meter_id = m.meter_id AND r.ts >= $1 AND r.ts < $2) h
    HAVING count(*) > 0
    UNION ALL
    SELECT 1, (extract(epoch FROM month) * 1000)::float8, n, ${ALL.columns.map((c) => `${c.array}::text`).join(", ")}
    FROM reading_blocks b WHERE b.meter_id = m.meter_id AND ${IN_RANGE}) x
  ORDER BY m.meter_id`

type MeterRow = (HotRow | BlockRow) & { meter_id: string; part: number }

export async function anyBlock(db: Db, from: Date, to: Date): Promise<boolean> {
  const { rows } = await db.query<{ any: boolean }>(ANY_BLOCK, [from, to])
  return rows[0]?.any === true
}

/** An epoch-µs time as the export writes it: ISO 8601 UTC to the millisecond (isoSql's to_char). */
const iso = (us: number) => new Date(Math.floor(us / 1000)).toISOString()

/** One meter's lines: CSV (empty for null, \r\n) or NDJSON (keys, null), as the rows' COPY writes them. */
function meterLines(meterId: string, rows: MeterRow[], fromUs: number, toUs: number, format: ExportFormat): string {
  const month = (r: MeterRow) => (r.part === 1 ? (r as BlockRow).month_ms : 0)
  rows.sort((a, b) => a.part - b.part || month(a) - month(b))
  const hot = rows[0]?.part === 0 ? (rows[0] as HotRow) : undefined
  const blocks = rows.filter((r) => r.part === 1) as BlockRow[]
  const { count, columns } = columnsOf(ALL, hot, blocks, fromUs, toUs, Infinity)
  const cols = READING_COLUMNS.slice(1).map((c) => columns[c.key])
  const ts = columns.ts as number[]
  const lines = new Array<string>(count)
  if (format === "csv") {
    const cell = (v: BlockValue) => (v === null ? "" : String(v))
    for (let i = 0; i < count; i++) {
      let line = `${meterId},${iso(ts[i])}`
      for (let j = 1; j < cols.length; j++) line += `,${cell(cols[j][i])}`
      lines[i] = line
    }
    return count ? `${lines.join("\r\n")}\r\n` : ""
  }
  const keys = READING_COLUMNS.slice(1).map((c) => `,"${c.key}":`)
  const head = `{"meterId":${JSON.stringify(meterId)}`
  for (let i = 0; i < count; i++) {
    let line = `${head}${keys[0]}"${iso(ts[i])}"`
    for (let j = 1; j < cols.length; j++) line += `${keys[j]}${String(cols[j][i])}`
    lines[i] = `${line}}`
  }
  return count ? `${lines.join("\n")}\n` : ""
}

/** The file's lines from rows in meter order, a meter's lines once all its rows are in. */
class ByMeter {
  private meter: string | undefined
  private rows: MeterRow[] = []
  constructor(
    private readonly from: Date,
    private readonly to: Date,
    private readonly format: ExportFormat,
  ) {}

  /** Takes a batch of rows; returns the lines of the meters it completed. */
  push(batch: MeterRow[]): string {
    let out = ""
    for (const r of batch) {
      if (r.meter_id !== this.meter) out += this.flush()
      this.meter = r.meter_id
      this.rows.push(r)
    }
    return out
  }

  flush(): string {
    if (this.meter === undefined) return ""
    const out = meterLines(this.meter, this.rows, this.from.getTime() * 1000, this.to.getTime() * 1000, this.format)
    this.meter = undefined
    this.rows = []
    return out
  }
}

/** Every registered meter's readings of [from, to) as the export's lines, from blocks and rows. */
export async function* blockLines(db: Db, from: Date, to: Date, format: ExportFormat): AsyncGenerator<string> {
  const lines = new ByMeter(from, to, format)
  const s = db.session && (await db.session())
  if (!s) {
    // PGlite: keyset batches of meters, each one statement
    let after = ""
    for (;;) {
      const { rows: meters } = await db.query<{ meter_id: string }>(
        `SELECT meter_id FROM meters WHERE meter_id > $1 ORDER BY meter_id LIMIT $2`,
        [after, KEYSET_METERS],
      )
      if (!meters.length) return
      const { rows } = await db.query<MeterRow>(METER_ROWS, [from, to, after, KEYSET_METERS])
      const text = lines.push(rows) + lines.flush()
      if (text) yield text
      after = meters[meters.length - 1].meter_id
    }
  }
  let done = false
  try {
    // one statement for the file, through a cursor: outside the reads' statement timeout
    await s.query(`BEGIN READ ONLY`)
    await s.query(`SET LOCAL statement_timeout = 0`)
    await s.query(`DECLARE export_blocks NO SCROLL CURSOR FOR ${METER_ROWS}`, [from, to, "", null])
    for (;;) {
      const { rows } = await s.query<MeterRow>(`FETCH ${FETCH_ROWS} FROM export_blocks`)
      const text = lines.push(rows) + (rows.length < FETCH_ROWS ? lines.flush() : "")
      if (text) yield text
      if (rows.length < FETCH_ROWS) break
    }
    await s.query(`COMMIT`)
    done = true
  } finally {
    // left early (the client gone, an error): the connection is closed, which ends the statement
    s.release(done ? undefined : new Error("export ended before its last row"))
  }
}
