// The bulk export's rows (routes/export.ts): every registered meter's readings of [from, to), in
// meter id order, each meter's by (ts, boot, seq, idx), as one query for the whole file rather
// than one per meter and page. PostgreSQL: one `COPY (query) TO STDOUT` on a connection of the
// reads' pool, the engine writing each line's values and the chunks passed on as they arrive
// (export-bytes.ts puts in the CSV's line ends or the NDJSON's keys); TCP back-pressure holds the
// engine while the client is slow. PGlite, one connection that a long statement would hold from
// ingest for the whole file: the same rows in keyset batches, each one read statement, the lines
// written by the engine. Either way at most a batch or a socket's chunk is in memory.
import type { Readable } from "node:stream"
import { READING_COLUMNS, type ReadingColumn } from "./columns.js"
import type { Db } from "./db.js"
import { anyBlock, blockLines } from "./export-blocks.js"
import { crlf, JsonKeys } from "./export-bytes.js"
import type { ExportFormat } from "./export-store.js"
export type { ExportFormat, ExportStore } from "./export-store.js"

/** Readings per batch (a FETCH, or a keyset page on PGlite). */
export const EXPORT_BATCH = 5000

// The lines are written by the engine, not built from row objects in Node (which cost 10 µs a row):
// the bytes routes/export.ts wrote from ReadingRows (csvLine, ndjsonLine there), which
// tests/store/export-stream.test.ts compares on both engines. Meter ids need no escaping (topics.ts).
export const isoSql = (x: string) => `to_char(${x} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`
/** A CSV cell: empty for null (concat drops nulls); booleans as true/false, as String() gives them. */
const csvCell = (c: ReadingColumn) =>
  c.sql === "timestamptz" ? isoSql(`r.${c.column}`) : c.sql === "boolean" ? `r.${c.column}::text` : `r.${c.column}`
/** A JSON value as JSON.stringify writes it. */
const jsonValue = (c: ReadingColumn) =>
  `coalesce(${
    c.sql === "timestamptz"
      ? `'"' || ${isoSql(`r.${c.column}`)} || '"'`
      : c.sql === "text"
        ? `to_json(r.${c.column})::text`
        : `r.${c.column}::text`
  }, 'null')`
const LINE: Record<ExportFormat, string> = {
  csv: `concat(${READING_COLUMNS.map(csvCell).join(", ',', ")}, E'\\r\\n')`,
  ndjson: `concat(${READING_COLUMNS.map((c, i) => `'${i ? "," : "{"}"${c.key}":', ${jsonValue(c)}`).join(", ")}, E'}\\n')`,
}

/**
 * Where the export reads a meter's readings with ts in [from, to), hot rows and compacted blocks
 * (store/blocks.ts), as a FROM item. Its arguments are SQL expressions.
 */
export const readingsOf = (meterId: string, from: string, to: string) => `readings_between(${meterId}, ${from}, ${to})`

/**
 * Meter by meter (meters' primary key: meter id order), each meter's readings of the period
 * sorted within the meter (OFFSET 0 keeps the subquery a per-meter loop, so a day is read by
 * index, never by a scan of its month): at most one meter's rows sorted at a time. `meters` and
 * `cond` narrow the meters and a meter's rows (the keyset batches: the meters' condition inside
 * their subquery, which OFFSET 0 closes to the planner, so that their index starts at it).
 */
export const exportFrom = (from: string, to: string, cond = "", meters = "true") => `FROM (
  SELECT meter_id FROM meters WHERE ${meters} ORDER BY meter_id OFFSET 0) m CROSS JOIN LATERAL (
  SELECT * FROM ${readingsOf("m.meter_id", from, to)} r WHERE true ${cond}
  ORDER BY r.ts, r.boot, r.seq, r.idx OFFSET 0) r`
const fromParams = (cond = "", meters = "true") => exportFrom("$1", "$2", cond, meters)
const ORDER = `ORDER BY m.meter_id, r.ts, r.boot, r.seq, r.idx`
const KEY = `r.meter_id AS k_meter, r.ts AS k_ts, r.boot AS k_boot, r.seq AS k_seq, r.idx AS k_idx`

/** The whole file as one query of lines ($1 from, $2 to): the export's cursor before COPY (testkit/export-paths.ts). */
export const exportSql = (format: ExportFormat) => `SELECT ${LINE[format]} AS line ${fromParams()} ${ORDER}`

/** A keyset batch after the row ($3 meter, $4 ts, $5 boot, $6 seq, $7 idx); $8 rows. */
const afterSql = (format: ExportFormat) => `SELECT ${LINE[format]} AS line, ${KEY} ${fromParams(
  `
    AND r.ts >= CASE WHEN m.meter_id = $3 THEN $4::timestamptz ELSE $1 END
    AND (m.meter_id <> $3 OR (r.ts, r.boot, r.seq, r.idx) > ($4, $5, $6, $7))`,
  `meter_id >= $3`,
)}
  ${ORDER} LIMIT $8`
const firstSql = (format: ExportFormat) => `SELECT ${LINE[format]} AS line, ${KEY} ${fromParams()} ${ORDER} LIMIT $3`

type Line = { line: string }
type Keyed = Line & { k_meter: string; k_ts: unknown; k_boot: number; k_seq: number; k_idx: number }
const joined = (rows: Line[]) => rows.map((r) => r.line).join("")

/** A value as COPY writes it: ts as ISO 8601 with milliseconds and Z, booleans as JS writes them. */
const valueSql = (c: ReadingColumn) =>
  c.sql === "timestamptz"
    ? isoSql(`r.${c.column}`)
    : c.sql === "boolean"
      ? `CASE WHEN r.${c.column} THEN 'true' WHEN NOT r.${c.column} THEN 'false' END`
      : `r.${c.column}`
const VALUES = READING_COLUMNS.map((c, i) => `${valueSql(c)} AS c${i}`).join(", ")
/** Strings in JSON: the text and time columns, quoted by COPY's CSV FORCE_QUOTE. */
const QUOTED = READING_COLUMNS.flatMap((c, i) => (c.sql === "text" || c.sql === "timestamptz" ? [`c${i}`] : []))

// CSV: COPY's text format, ',' between values and nothing for null, is the file's line but for its
// end (\n; the file's is \r\n). NDJSON: COPY's CSV format, null as null and the strings quoted, is
// the line's JSON values in column order between commas; the keys go in as it passes. Neither
// format escapes anything here: meter ids are [A-Za-z0-9_.-] (topics.ts), the rest are integers,
// booleans and ISO times, none holding a comma, quote, backslash or line end.
const COPY_OPTIONS: Record<ExportFormat, string> = {
  csv: `(FORMAT text, DELIMITER ',', NULL '')`,
  ndjson: `(FORMAT csv, NULL 'null', FORCE_QUOTE (${QUOTED.join(", ")}))`,
}

/** A time as a timestamptz literal: COPY takes no parameters (an ISO string from a Date needs no escaping). */
const at = (t: Date) => `'${t.toISOString()}'::timestamptz`

/**
 * The file as one statement. Rows come meter by meter in the order the ORDER BY asks for, which the
 * nested loop over the meters, sorted first (OFFSET 0: whatever way the planner reads meters), keeps
 * without sorting the file; within a meter, in its own ORDER BY's. (An ORDER BY of the whole key
 * sorted each meter's rows a second time, ⅙ of the engine's time; a sort of meters after the loop
 * would not keep each meter's order: PostgreSQL's sort is not stable.)
 */
export const copySql = (from: Date, to: Date, format: ExportFormat) =>
  `COPY (SELECT ${VALUES} ${exportFrom(at(from), at(to))} ORDER BY m.meter_id) TO STDOUT ${COPY_OPTIONS[format]}`

export async function* exportLines(
  db: Db,
  from: Date,
  to: Date,
  format: ExportFormat,
  batch = EXPORT_BATCH,
): AsyncGenerator<string | Buffer> {
  // a period compaction moved into blocks: decoded in the bridge (export-blocks.ts)
  if (await anyBlock(db, from, to)) return yield* blockLines(db, from, to, format)
  const s = db.session && (await db.session())
  if (!s) return yield* keysetLines(db, from, to, format, batch)
  let done = false
  try {
    if (!s.copyOut) throw new Error("the export's session cannot COPY")
    // one statement for the whole file: outside the reads' statement timeout, which is per statement
    await s.query(`BEGIN READ ONLY`)
    await s.query(`SET LOCAL statement_timeout = 0`)
    yield* copyLines(s.copyOut(copySql(from, to, format)), format)
    await s.query(`COMMIT`)
    done = true
  } finally {
    // A COPY left unread (the client gone: return() at a yield; an error) holds its connection in
    // the middle of the protocol: the connection is closed, which ends the statement.
    s.release(done ? undefined : new Error("export ended before its last row"))
  }
}

/** COPY's chunks in the file's bytes (export-bytes.ts), as they arrive. */
async function* copyLines(stream: Readable, format: ExportFormat): AsyncGenerator<Buffer> {
  const keys = new JsonKeys()
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) yield format === "csv" ? crlf(chunk) : keys.push(chunk)
  } finally {
    // for await destroys a stream left early; the connection's close may still report to it
    stream.on("error", () => {})
  }
}

async function* keysetLines(db: Db, from: Date, to: Date, format: ExportFormat, batch: number) {
  let last: Keyed | undefined
  for (;;) {
    const { rows } = last
      ? await db.query<Keyed>(afterSql(format), [
          from,
          to,
          last.k_meter,
          last.k_ts,
          last.k_boot,
          last.k_seq,
          last.k_idx,
          batch,
        ])
      : await db.query<Keyed>(firstSql(format), [from, to, batch])
    if (rows.length) {
      last = rows[rows.length - 1]
      yield joined(rows)
    }
    if (rows.length < batch) return
  }
}
