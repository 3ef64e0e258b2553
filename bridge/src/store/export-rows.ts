// The bulk export's rows (routes/export.ts): every registered meter's readings of [from, to), in
// meter id order, each meter's by (ts, boot, seq, idx), as one query for the whole file rather
// than one per meter and page. PostgreSQL: one server-side cursor on a connection of the reads'
// pool, FETCHed batch by batch as the client takes them (each FETCH under the reads' statement
// timeout and their share of the time). PGlite, one connection that a cursor's transaction would
// hold from ingest for the whole file: the same query in keyset batches, each one read statement.
// Either way at most one batch is in memory, whatever the period's size.
import type { Db } from "./db.js"
import { toReading } from "./rows.js"
import type { ReadingRow } from "./store.js"

export interface ExportStore {
  /**
   * Every meter's readings with ts in [from, to), in batches of up to `batch` rows: meters in meter
   * id order (as meterIds()), each meter's readings by (ts, boot, seq, idx). Stopping the iteration
   * (return()) ends the query and gives its connection back.
   */
  exportReadings(from: Date, to: Date, batch?: number): AsyncGenerator<ReadingRow[]>
}

/** Readings per batch (a FETCH, or a keyset page on PGlite). */
export const EXPORT_BATCH = 5000

// meters' primary key gives meter id order; each meter's rows come from readings_meter_ts (the
// month's partition), sorted within the meter (an incremental sort): never the whole period at once
const FROM = `FROM meters m CROSS JOIN LATERAL (
  SELECT * FROM readings r WHERE r.meter_id = m.meter_id AND r.ts >= $1 AND r.ts < $2`
const ORDER = `ORDER BY m.meter_id, r.ts, r.boot, r.seq, r.idx`

/** The whole file: the cursor's query. */
export const EXPORT_SQL = `SELECT r.* ${FROM}) r ${ORDER}`

/** A keyset batch after the row ($3 meter, $4 ts, $5 boot, $6 seq, $7 idx); $8 rows. */
const AFTER_SQL = `SELECT r.* ${FROM}
    AND r.ts >= CASE WHEN m.meter_id = $3 THEN $4::timestamptz ELSE $1 END
    AND (m.meter_id <> $3 OR (r.ts, r.boot, r.seq, r.idx) > ($4, $5, $6, $7))) r
  WHERE m.meter_id >= $3 ${ORDER} LIMIT $8`

export async function* exportReadings(db: Db, from: Date, to: Date, batch = EXPORT_BATCH) {
  if (db.session) yield* cursorRows(db.session, from, to, batch)
  else yield* keysetRows(db, from, to, batch)
}

async function* cursorRows(session: NonNullable<Db["session"]>, from: Date, to: Date, batch: number) {
  const s = await session()
  let done = false
  try {
    await s.query(`BEGIN READ ONLY`)
    await s.query(`DECLARE export_rows NO SCROLL CURSOR FOR ${EXPORT_SQL}`, [from, to])
    for (;;) {
      const { rows } = await s.query(`FETCH ${Math.floor(batch)} FROM export_rows`)
      if (rows.length) yield rows.map(toReading)
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

async function* keysetRows(db: Db, from: Date, to: Date, batch: number) {
  let last: ReadingRow | undefined
  for (;;) {
    const { rows } = last
      ? await db.query(AFTER_SQL, [from, to, last.meterId, last.ts, last.boot, last.seq, last.idx, batch])
      : await db.query(`${EXPORT_SQL} LIMIT $3`, [from, to, batch])
    if (rows.length) {
      const out = rows.map(toReading)
      last = out[out.length - 1]
      yield out
    }
    if (rows.length < batch) return
  }
}
