// The bulk export's rows (routes/export.ts): every registered meter's readings of [from, to), in
// meter id order, each meter's by (ts, boot, seq, idx), as one query for the whole file rather
// than one per meter and page. PostgreSQL: one server-side cursor on a connection of the reads'
// pool, FETCHed batch by batch as the client takes them (each FETCH under the reads' statement
// timeout and their share of the time). PGlite, one connection that a cursor's transaction would
// hold from ingest for the whole file: the same query in keyset batches, each one read statement.
// Either way at most one batch is in memory, whatever the period's size.
import { READING_COLUMNS, type ReadingColumn } from "./columns.js"
import type { Db } from "./db.js"
import type { ExportFormat } from "./export-store.js"
export type { ExportFormat, ExportStore } from "./export-store.js"

/** Readings per batch (a FETCH, or a keyset page on PGlite). */
export const EXPORT_BATCH = 5000

// The lines are written by the engine, not built from row objects in Node (which cost 10 µs a row):
// the bytes routes/export.ts wrote from ReadingRows (csvLine, ndjsonLine there), which
// tests/store/export-stream.test.ts compares on both engines. Meter ids need no escaping (topics.ts).
const iso = (x: string) => `to_char(${x} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`
/** A CSV cell: empty for null (concat drops nulls); booleans as true/false, as String() gives them. */
const csvCell = (c: ReadingColumn) =>
  c.sql === "timestamptz" ? iso(`r.${c.column}`) : c.sql === "boolean" ? `r.${c.column}::text` : `r.${c.column}`
/** A JSON value as JSON.stringify writes it. */
const jsonValue = (c: ReadingColumn) =>
  `coalesce(${
    c.sql === "timestamptz"
      ? `'"' || ${iso(`r.${c.column}`)} || '"'`
      : c.sql === "text"
        ? `to_json(r.${c.column})::text`
        : `r.${c.column}::text`
  }, 'null')`
const LINE: Record<ExportFormat, string> = {
  csv: `concat(${READING_COLUMNS.map(csvCell).join(", ',', ")}, E'\\r\\n')`,
  ndjson: `concat(${READING_COLUMNS.map((c, i) => `'${i ? "," : "{"}"${c.key}":', ${jsonValue(c)}`).join(", ")}, E'}\\n')`,
}

// Meter by meter (meters' primary key: meter id order), each meter's readings of the period from
// readings_meter_ts, sorted within the meter (OFFSET 0 keeps the subquery a per-meter loop, so a
// day is read by index, never by a scan of its month): at most one meter's rows sorted at a time.
const from = (cond = "") => `FROM meters m CROSS JOIN LATERAL (
  SELECT * FROM readings_between(m.meter_id, $1, $2) r WHERE true ${cond}
  ORDER BY r.ts, r.boot, r.seq, r.idx OFFSET 0) r`
const ORDER = `ORDER BY m.meter_id, r.ts, r.boot, r.seq, r.idx`
const KEY = `r.meter_id AS k_meter, r.ts AS k_ts, r.boot AS k_boot, r.seq AS k_seq, r.idx AS k_idx`

/** The whole file: the cursor's query. */
export const exportSql = (format: ExportFormat) => `SELECT ${LINE[format]} AS line ${from()} ${ORDER}`

/** A keyset batch after the row ($3 meter, $4 ts, $5 boot, $6 seq, $7 idx); $8 rows. */
const afterSql = (format: ExportFormat) => `SELECT ${LINE[format]} AS line, ${KEY} ${from(`
    AND r.ts >= CASE WHEN m.meter_id = $3 THEN $4::timestamptz ELSE $1 END
    AND (m.meter_id <> $3 OR (r.ts, r.boot, r.seq, r.idx) > ($4, $5, $6, $7))`)}
  WHERE m.meter_id >= $3 ${ORDER} LIMIT $8`
const firstSql = (format: ExportFormat) => `SELECT ${LINE[format]} AS line, ${KEY} ${from()} ${ORDER} LIMIT $3`

type Line = { line: string }
type Keyed = Line & { k_meter: string; k_ts: unknown; k_boot: number; k_seq: number; k_idx: number }
const joined = (rows: Line[]) => rows.map((r) => r.line).join("")

export async function* exportLines(db: Db, from: Date, to: Date, format: ExportFormat, batch = EXPORT_BATCH) {
  if (db.session) yield* cursorLines(db.session, from, to, format, batch)
  else yield* keysetLines(db, from, to, format, batch)
}

async function* cursorLines(
  session: NonNullable<Db["session"]>,
  from: Date,
  to: Date,
  format: ExportFormat,
  batch: number,
) {
  const s = await session()
  let done = false
  try {
    await s.query(`BEGIN READ ONLY`)
    await s.query(`DECLARE export_rows NO SCROLL CURSOR FOR ${exportSql(format)}`, [from, to])
    for (;;) {
      const { rows } = await s.query<Line>(`FETCH ${Math.floor(batch)} FROM export_rows`)
      if (rows.length) yield joined(rows)
      if (rows.length < batch) break
    }
    done = true
  } finally {
    // COMMIT closes the cursor; after a failure, or a client gone (return() at a yield), ROLLBACK.
    // A connection that cannot even do that is closed, not given back.
    await s.query(done ? `COMMIT` : `ROLLBACK`).then(
      () => s.release(),
      (e: Error) => s.release(e),
    )
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
