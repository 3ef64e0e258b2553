// Reads of interval readings: a meter's rows by time (hot rows and compacted blocks, blocks.ts), and every meter's newest (meter_latest,
// kept on insert by store/writes.ts, so these never scan readings).
import { COLUMN_NAMES } from "./columns.js"
import type { Db } from "./db.js"
import { toReading } from "./rows.js"
import type { LatestQuery, ReadingQuery, ReadingRow } from "./store.js"

export async function readings(db: Db, meterId: string, q: ReadingQuery = {}): Promise<ReadingRow[]> {
  const { rows } = await db.query(
    `SELECT * FROM readings_between($1, COALESCE($2::timestamptz, '-infinity'), COALESCE($3::timestamptz, 'infinity'))
     ORDER BY ts, boot, seq, idx LIMIT $4`,
    [meterId, q.from ?? null, q.to ?? null, q.limit ?? 10000],
  )
  return rows.map(toReading)
}

export async function latest(db: Db, q: LatestQuery = {}): Promise<ReadingRow[]> {
  const { rows } = await db.query(
    `SELECT * FROM meter_latest WHERE ($1::text IS NULL OR meter_id > $1) ORDER BY meter_id LIMIT $2`,
    [q.after ?? null, q.limit ?? 1_000_000],
  )
  return rows.map(toReading)
}

export async function latestOf(db: Db, meterIds: string[]): Promise<ReadingRow[]> {
  if (!meterIds.length) return []
  const { rows } = await db.query(`SELECT * FROM meter_latest WHERE meter_id = ANY($1::text[]) ORDER BY meter_id`, [
    meterIds,
  ])
  return rows.map(toReading)
}

const camel = (c: string) => c.replace(/_([a-z])/g, (_, x: string) => x.toUpperCase())
/** meter_latest's columns under their API names, ts as ISO 8601 UTC. */
const LATEST_JSON_COLUMNS = COLUMN_NAMES.map((c) =>
  c === "ts" ? `to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS ts` : `${c} AS "${camel(c)}"`,
).join(", ")

/** latest(), serialised by the engine (Store.latestJson). */
export async function latestJson(db: Db, q: LatestQuery = {}) {
  // json_agg over an aliased row is faster than json_build_object per row
  const { rows } = await db.query<{ json: string | null; count: number; last: string | null }>(
    `SELECT json_agg(l ORDER BY "meterId")::text AS json, count(*) AS count, max("meterId") AS last
     FROM (SELECT ${LATEST_JSON_COLUMNS} FROM meter_latest
           WHERE ($1::text IS NULL OR meter_id > $1) ORDER BY meter_id LIMIT $2) l`,
    [q.after ?? null, q.limit ?? 1_000_000],
  )
  const r = rows[0]
  return { json: r.json ?? "[]", count: Number(r.count), last: r.last }
}
