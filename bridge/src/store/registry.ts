// The registry (meters, their seals and locations, whether they are online), alarms as operators
// see and acknowledge them, and the dead letters' reads and retention. Reads take the open API's
// reader (Db.reads); writes the ingest connection.
import type { FleetCounts } from "../metrics.js"
import type { Db } from "./db.js"
import { toAck, toAlarm, toDeadLetter, toMeter } from "./rows.js"
import type {
  AlarmAck,
  AlarmKey,
  AlarmQuery,
  DeadLetterQuery,
  DeadLetterRetention,
  DistrictRow,
  MeterLocation,
  MeterRow,
  MeterSeal,
} from "./store.js"
import { bytes } from "./writes.js"

export async function getMeter(db: Db, meterId: string): Promise<MeterRow | undefined> {
  const { rows } = await db.query(`SELECT * FROM meters WHERE meter_id = $1`, [meterId])
  return rows[0] ? toMeter(rows[0]) : undefined
}

export async function listMeters(db: Db): Promise<MeterRow[]> {
  const { rows } = await db.query(`SELECT * FROM meters ORDER BY meter_id`)
  return rows.map(toMeter)
}

export async function meterIds(db: Db): Promise<string[]> {
  const { rows } = await db.query<{ meter_id: string }>(`SELECT meter_id FROM meters ORDER BY meter_id`)
  return rows.map((r) => r.meter_id)
}

export async function firstSeen(db: Db): Promise<Date | null> {
  const { rows } = await db.query<{ t: Date | null }>(`SELECT min(first_seen) AS t FROM meters`)
  return rows[0]?.t ? new Date(rows[0].t) : null
}

export async function registerMeter(db: Db, meterId: string, at: Date, seal: Partial<MeterSeal> = {}) {
  const { rows } = await db.query(
    `INSERT INTO meters (meter_id, first_seen, last_seen, seal_policy, seal_key, seal_key_next)
     VALUES ($1, $2, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING meter_id`,
    [meterId, at, seal.policy ?? "open", bytes(seal.key), bytes(seal.nextKey)],
  )
  return rows.length === 1
}

/** Store.linkKey: undefined for an unknown meter, null for one without a link key. */
export async function linkKey(db: Db, meterId: string): Promise<Uint8Array | null | undefined> {
  const { rows } = await db.query<{ k: Uint8Array | null }>(`SELECT wssk_key AS k FROM meters WHERE meter_id = $1`, [
    meterId,
  ])
  if (!rows.length) return undefined
  return rows[0].k ? new Uint8Array(rows[0].k) : null
}

export async function setLinkKey(db: Db, meterId: string, key: Uint8Array | null) {
  const { rows } = await db.query(`UPDATE meters SET wssk_key = $2 WHERE meter_id = $1 RETURNING 1`, [
    meterId,
    bytes(key),
  ])
  return rows.length > 0
}

export async function setLocation(db: Db, meterId: string, l: MeterLocation | null) {
  const { rows } = await db.query(
    `UPDATE meters SET lat = $2, lon = $3, address = $4, district = $5 WHERE meter_id = $1 RETURNING 1`,
    [meterId, l?.lat ?? null, l?.lon ?? null, l?.address ?? null, l?.district ?? null],
  )
  return rows.length > 0
}

export async function countOnline(db: Db): Promise<number> {
  const { rows } = await db.query(`SELECT count(*) AS n FROM meters WHERE online`)
  return Number(rows[0].n)
}

/** Store.fleetCounts: one pass over meters for the fleet gauges of /metrics. */
export async function fleetCounts(db: Db): Promise<FleetCounts> {
  const { rows } = await db.query(
    `SELECT count(*) AS meters, count(*) FILTER (WHERE inactive) AS inactive,
       COALESCE(sum(dropped), 0) AS dropped, count(*) FILTER (WHERE unstored > 0) AS unstored FROM meters`,
  )
  const r = rows[0]
  return {
    meters: Number(r.meters),
    inactive: Number(r.inactive),
    dropped: Number(r.dropped),
    unstored: Number(r.unstored),
  }
}

/** Store.checkInactivity: one statement, so two bridges checking raise one alarm per meter. */
export async function checkInactivity(db: Db, now: Date, slackS: number): Promise<string[]> {
  const { rows } = await db.query<{ meter_id: string }>(
    `WITH gone AS (
       UPDATE meters SET online = false, inactive = true
       WHERE NOT inactive AND interval_s > 0
         AND last_seen < $1::timestamptz
           - make_interval(secs => 2 * interval_s * GREATEST(COALESCE(batch, 1), 1) + $2::double precision)
       RETURNING meter_id, last_seen)
     INSERT INTO bridge_alarms (meter_id, type, active, ts, value)
     SELECT meter_id, 'INACTIVE', true, $1, floor(extract(epoch FROM $1::timestamptz - last_seen))::bigint FROM gone
     RETURNING meter_id`,
    [now, slackS],
  )
  return rows.map((r) => r.meter_id).sort()
}

export async function alarms(db: Db, q: AlarmQuery = {}) {
  const params = [q.meterId ?? null, q.from ?? null, q.to ?? null, q.limit ?? 10000]
  const where = `($1::text IS NULL OR meter_id = $1)
    AND ($2::timestamptz IS NULL OR ts >= $2) AND ($3::timestamptz IS NULL OR ts < $3)`
  const edges = q.open
    ? // open: the newest edge of each (meter, type) is a raise
      `SELECT * FROM (
         SELECT DISTINCT ON (meter_id, type) * FROM alarm_events WHERE ($1::text IS NULL OR meter_id = $1)
         ORDER BY meter_id, type, ts DESC, boot DESC, seq DESC) newest
       WHERE active AND ${where} ORDER BY ts, meter_id, boot, seq LIMIT $4`
    : `SELECT * FROM alarm_events WHERE ${where} ORDER BY ts, meter_id, boot, seq LIMIT $4`
  const { rows } = await db.query(
    `SELECT e.*, k.acked_by, k.acked_at, k.note FROM (${edges}) e
     LEFT JOIN alarm_acks k USING (meter_id, boot, seq) ORDER BY e.ts, e.meter_id, e.boot, e.seq`,
    params,
  )
  return rows.map(toAlarm)
}

export async function ackAlarm(db: Db, key: AlarmKey, ack: AlarmAck) {
  const params = [key.meterId, key.boot, key.seq]
  // the edge must exist (a meter's alarm frame, or a bridge alarm with boot 0 and seq = its id)
  const added = await db.query(
    `INSERT INTO alarm_acks (meter_id, boot, seq, acked_by, acked_at, note)
     SELECT meter_id, boot, seq, $4::text, $5::timestamptz, $6::text FROM alarm_events
     WHERE meter_id = $1 AND boot = $2 AND seq = $3
     ON CONFLICT DO NOTHING RETURNING acked_by, acked_at, note`,
    [...params, ack.by, ack.at, ack.note],
  )
  // a statement of its own: it sees an acknowledgement committed while the insert waited on it
  const rows = added.rows.length
    ? added.rows
    : (
        await db.query(
          `SELECT acked_by, acked_at, note FROM alarm_acks WHERE meter_id = $1 AND boot = $2 AND seq = $3`,
          params,
        )
      ).rows
  const r = rows[0]
  if (!r) return undefined
  return { created: added.rows.length > 0, ack: toAck(r) }
}

export async function districts(db: Db, q: { from?: Date; to?: Date }): Promise<DistrictRow[]> {
  const { rows } = await db.query(
    `WITH open_alarms AS (
       SELECT meter_id FROM (
         SELECT DISTINCT ON (meter_id, type) meter_id, active FROM alarm_events
         ORDER BY meter_id, type, ts DESC, boot DESC, seq DESC) newest WHERE active),
     used AS (
       SELECT m.meter_id, sum(r.volume_ml) AS water_ml, sum(r.energy_wh) AS energy_wh FROM meters m
       CROSS JOIN LATERAL readings_between(m.meter_id, COALESCE($1::timestamptz, '-infinity'),
         COALESCE($2::timestamptz, 'infinity')) r GROUP BY m.meter_id)
     SELECT m.district, count(*) AS meters, count(*) FILTER (WHERE m.online) AS online,
       (SELECT count(*) FROM open_alarms a JOIN meters x USING (meter_id)
          WHERE x.district IS NOT DISTINCT FROM m.district) AS open_alarms,
       COALESCE(sum(u.water_ml), 0) AS water_ml, COALESCE(sum(u.energy_wh), 0) AS energy_wh
     FROM meters m LEFT JOIN used u USING (meter_id)
     GROUP BY m.district ORDER BY m.district NULLS LAST`,
    [q.from ?? null, q.to ?? null],
  )
  return rows.map((r) => ({
    district: (r.district as string) ?? null,
    meters: Number(r.meters),
    online: Number(r.online),
    openAlarms: Number(r.open_alarms),
    waterMl: Number(r.water_ml),
    energyWh: Number(r.energy_wh),
  }))
}

export async function deadLetters(db: Db, q: DeadLetterQuery = {}) {
  const { rows } = await db.query(
    `SELECT * FROM dead_letters WHERE ($1::bigint IS NULL OR id < $1) ORDER BY id DESC LIMIT $2`,
    [q.beforeId ?? null, q.limit ?? 100],
  )
  return rows.map(toDeadLetter)
}

export async function countDeadLetters(db: Db): Promise<number> {
  const { rows } = await db.query(`SELECT count(*) AS n FROM dead_letters`)
  return Number(rows[0].n)
}

/** Deletes the dead letters beyond the retention; returns how many. engine: PGlite needs upkeep. */
export async function pruneDeadLetters(db: Db, engine: string, r: DeadLetterRetention, now: Date) {
  const { rows } = await db.query<{ n: number }>(
    `WITH gone AS (
       DELETE FROM dead_letters WHERE received_at < $1::timestamptz - make_interval(secs => $2::double precision)
          OR id <= (SELECT id FROM dead_letters ORDER BY id DESC OFFSET $3 LIMIT 1)
       RETURNING 1)
     SELECT count(*) AS n FROM gone`,
    [now, r.maxAgeS, r.maxRows],
  )
  const deleted = Number(rows[0].n)
  // PGlite runs no autovacuum: without this, deleted rows' space is never reused
  if (deleted > 0) await db.query(`VACUUM dead_letters`)
  // nor a checkpointer: its WAL grew to 64 MB per 100k frames until a checkpoint recycles it
  // (measured with npm run fuzz); this job runs every minute
  if (engine === "pglite") await db.query(`CHECKPOINT`)
  return deleted
}
