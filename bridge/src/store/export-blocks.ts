// The bulk export of a period that compaction moved into blocks (issue 24 item 4). COPY over
// readings_between decodes each block in SQL, a window sum per value: 5.6 µs of engine time a
// reading, 1.6× the rows' (bench/README.md). Here the engine only writes each block's arrays as
// text, and the bridge decodes them (reading-columns.ts, the path of the columns route) and writes
// the lines: the same bytes as the rows' COPY (tests/store/compaction-api.test.ts compares the
// files before and after compaction, both engines). PostgreSQL: one statement for the file, read
// through a cursor a batch of rows at a time; PGlite: keyset batches of meters, each a statement.
// Either way at most a batch of blocks and its meters' lines are in memory.
import { READING_COLUMNS } from "./columns.js"
import type { Db } from "./db.js"
import type { ExportFormat } from "./export-store.js"
import type { BlockValue } from "./reading-columns-store.js"
import { columnsOf, selection, type BlockRow, type HotRow } from "./reading-columns.js"

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

const [COMMA, QUOTE, MINUS, DOT, COLON, ZERO, LF, CR] = [",", '"', "-", ".", ":", "0", "\n", "\r"].map((c) =>
  c.charCodeAt(0),
)
const DAY_MS = 86_400_000
const TRUE = Buffer.from("true")
const FALSE = Buffer.from("false")
const NULL = Buffer.from("null")

/**
 * A meter's lines written as bytes: numbers digit by digit and times from a day's cached
 * "YYYY-MM-DDT", without a string per value (formatting in strings cost the bridge 6.4 µs a
 * reading for CSV, bench/README.md).
 */
export class LineWriter {
  private buf = Buffer.allocUnsafe(0)
  private at = 0
  private day = NaN
  private dayPrefix = Buffer.alloc(0)

  /** A fresh buffer of n bytes for the next lines (the last one's bytes went out with take). */
  start(n: number) {
    this.buf = Buffer.allocUnsafe(n)
    this.at = 0
  }

  byte(b: number) {
    this.buf[this.at++] = b
  }

  /** A few bytes (a key, an id, true/false): a loop, cheaper than set() at these lengths. */
  bytes(b: Uint8Array) {
    const buf = this.buf
    let at = this.at
    for (let i = 0; i < b.length; i++) buf[at++] = b[i]
    this.at = at
  }

  /** An integer below 2^53 in magnitude, as String() writes it. */
  int(v: number) {
    const buf = this.buf
    if (v < 0) {
      buf[this.at++] = MINUS
      v = -v
    }
    if (v >= 2 ** 31) {
      // the digits above the last nine fit an int32 (v < 2^53), and so do the last nine
      const hi = Math.floor(v / 1e9)
      this.int(hi)
      this.digits(v - hi * 1e9, 9)
      return
    }
    // int32 arithmetic
    let x = v | 0
    let digits = 1
    for (let t = x; t >= 10; t = (t / 10) | 0) digits++
    for (let i = this.at + digits - 1; i >= this.at; i--) {
      const q = (x / 10) | 0
      buf[i] = ZERO + x - q * 10
      x = q
    }
    this.at += digits
  }

  private digits(v: number, n: number) {
    for (let i = this.at + n - 1; i >= this.at; i--) {
      const q = (v / 10) | 0
      this.buf[i] = ZERO + v - q * 10
      v = q
    }
    this.at += n
  }

  /** An epoch-µs time as ISO 8601 UTC to the millisecond (isoSql's to_char; toISOString's form). */
  iso(us: number) {
    const ms = Math.floor(us / 1000)
    const day = Math.floor(ms / DAY_MS)
    if (day !== this.day) {
      this.day = day
      this.dayPrefix = Buffer.from(new Date(day * DAY_MS).toISOString().slice(0, 11), "latin1")
    }
    this.bytes(this.dayPrefix)
    let r = ms - day * DAY_MS
    const h = Math.floor(r / 3_600_000)
    r -= h * 3_600_000
    const m = Math.floor(r / 60_000)
    r -= m * 60_000
    const sec = Math.floor(r / 1000)
    this.digits(h, 2)
    this.byte(COLON)
    this.digits(m, 2)
    this.byte(COLON)
    this.digits(sec, 2)
    this.byte(DOT)
    this.digits(r - sec * 1000, 3)
    this.byte(0x5a) // Z
  }

  /**
   * A value as JSON.stringify writes it in an array: true, false, null (a hole or undefined too),
   * an integer; any other number (no reading holds one: columns.ts bounds them) through JSON.stringify.
   */
  json(v: BlockValue | undefined) {
    if (typeof v === "number") {
      if (Number.isSafeInteger(v)) this.int(v)
      else this.bytes(Buffer.from(JSON.stringify(v)))
    } else if (v === true) this.bytes(TRUE)
    else if (v === false) this.bytes(FALSE)
    else this.bytes(NULL)
  }

  /** The bytes written since start. */
  take(): Buffer {
    return this.buf.subarray(0, this.at)
  }
}

/** NDJSON's keys, each with the comma before it (READING_COLUMNS after meterId, ts first). */
const KEYS = READING_COLUMNS.slice(1).map((c) => Buffer.from(`,"${c.key}":`))
/** The longest line's bytes past the meter id: the keys, 24 for the time, 17 for each other value. */
const LINE_MAX = 64 + KEYS.reduce((n, k) => n + k.length, 0) + 24 + READING_COLUMNS.length * 17

/** One meter's lines: CSV (empty for null, \r\n) or NDJSON (keys, null), as the rows' COPY writes them. */
function meterLines(
  meterId: string,
  rows: MeterRow[],
  fromUs: number,
  toUs: number,
  format: ExportFormat,
  w: LineWriter,
) {
  const month = (r: MeterRow) => (r.part === 1 ? (r as BlockRow).month_ms : 0)
  rows.sort((a, b) => a.part - b.part || month(a) - month(b))
  const hot = rows[0]?.part === 0 ? (rows[0] as HotRow) : undefined
  const blocks = rows.filter((r) => r.part === 1) as BlockRow[]
  const { count, columns } = columnsOf(ALL, hot, blocks, fromUs, toUs, Infinity)
  const cols = READING_COLUMNS.slice(1).map((c) => columns[c.key])
  const ts = columns.ts as number[]
  const csv = format === "csv"
  const head = Buffer.from(csv ? meterId : `{"meterId":${JSON.stringify(meterId)}`, "latin1")
  w.start(count * (head.length + LINE_MAX))
  for (let i = 0; i < count; i++) {
    w.bytes(head)
    if (csv) w.byte(COMMA)
    else {
      w.bytes(KEYS[0])
      w.byte(QUOTE)
    }
    w.iso(ts[i])
    if (!csv) w.byte(QUOTE)
    for (let j = 1; j < cols.length; j++) {
      if (csv) w.byte(COMMA)
      else w.bytes(KEYS[j])
      const v = cols[j][i]
      if (v !== null || !csv) w.json(v) // CSV: an empty cell for null
    }
    if (csv) {
      w.byte(CR)
      w.byte(LF)
    } else {
      w.byte(0x7d) // }
      w.byte(LF)
    }
  }
}

/** The file's lines from rows in meter order, a meter's lines once all its rows are in. */
class ByMeter {
  private meter: string | undefined
  private rows: MeterRow[] = []
  private readonly writer = new LineWriter()
  /** Each completed meter's lines, until taken. */
  private done: Buffer[] = []
  constructor(
    private readonly from: Date,
    private readonly to: Date,
    private readonly format: ExportFormat,
  ) {}

  /** Takes a row (rows come in meter order); writes the lines of the meter it completes. */
  push(r: MeterRow) {
    if (r.meter_id !== this.meter) this.flush()
    this.meter = r.meter_id
    this.rows.push(r)
  }

  /** Writes the lines of the meter whose rows are in. */
  flush() {
    if (this.meter === undefined) return
    const [from, to] = [this.from.getTime() * 1000, this.to.getTime() * 1000]
    meterLines(this.meter, this.rows, from, to, this.format, this.writer)
    const bytes = this.writer.take()
    if (bytes.length) this.done.push(bytes)
    this.meter = undefined
    this.rows = []
  }

  /** The completed meters' lines since the last take, a buffer per meter. */
  take(): Buffer[] {
    const out = this.done
    this.done = []
    return out
  }
}

/**
 * A batch's rows, a meter's lines as soon as its rows are in, and a turn of the event loop after
 * each (decoding and writing a meter-month takes the bridge a few ms: ingest acks wait no longer).
 */
async function* meterByMeter(lines: ByMeter, rows: MeterRow[]) {
  for (const r of rows) {
    lines.push(r)
    for (const bytes of lines.take()) {
      yield bytes
      await new Promise((resolve) => setImmediate(resolve))
    }
  }
}

/** A read started ahead: awaited on the next turn, unless the consumer has stopped (then its failure is no one's). */
function ahead<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {})
  return p
}

/**
 * Every registered meter's readings of [from, to) as the export's lines, from blocks and rows. The
 * engine reads the next batch while the bridge decodes and writes this one (PostgreSQL's backend and
 * PGlite's thread each run beside the main thread).
 */
export async function* blockLines(
  db: Db,
  from: Date,
  to: Date,
  format: ExportFormat,
  { fetchRows = FETCH_ROWS, keysetMeters = KEYSET_METERS } = {},
): AsyncGenerator<Buffer> {
  const lines = new ByMeter(from, to, format)
  const s = db.session && (await db.session())
  if (!s) {
    // PGlite: keyset batches of meters, each one statement
    const batch = async (after: string) => {
      const { rows: meters } = await db.query<{ meter_id: string }>(
        `SELECT meter_id FROM meters WHERE meter_id > $1 ORDER BY meter_id LIMIT $2`,
        [after, keysetMeters],
      )
      if (!meters.length) return undefined
      const rows = ahead(db.query<MeterRow>(METER_ROWS, [from, to, after, keysetMeters]).then((r) => r.rows))
      return { last: meters[meters.length - 1].meter_id, rows }
    }
    let next = ahead(batch(""))
    for (;;) {
      const b = await next
      if (!b) return
      const rows = await b.rows
      next = ahead(batch(b.last))
      yield* meterByMeter(lines, rows)
      lines.flush()
      yield* lines.take()
    }
  }
  let done = false
  try {
    // one statement for the file, through a cursor: outside the reads' statement timeout
    await s.query(`BEGIN READ ONLY`)
    await s.query(`SET LOCAL statement_timeout = 0`)
    await s.query(`DECLARE export_blocks NO SCROLL CURSOR FOR ${METER_ROWS}`, [from, to, "", null])
    const fetch = () => ahead(s.query<MeterRow>(`FETCH ${fetchRows} FROM export_blocks`))
    let next = fetch()
    for (;;) {
      const { rows } = await next
      const last = rows.length < fetchRows
      if (!last) next = fetch()
      yield* meterByMeter(lines, rows)
      if (last) lines.flush()
      yield* lines.take()
      if (last) break
    }
    await s.query(`COMMIT`)
    done = true
  } finally {
    // left early (the client gone, an error): the connection is closed, which ends the statement
    s.release(done ? undefined : new Error("export ended before its last row"))
  }
}
