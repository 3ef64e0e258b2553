// Fleet-scale fixtures for the "latest reading per meter" call: seeds N meters with R readings
// each straight in SQL (generate_series; both engines), meter_latest included as ingest keeps it.
// Used by tests/store/latest.test.ts and by the measurement, bench/latest.ts.
import type { SqlStore } from "../bridge/src/store/sql-store.js"
import type { Store } from "../bridge/src/store/store.js"

export const FLEET_T0 = "2026-01-01T00:00:00Z"

const COLUMNS = `meter_id, ts, interval_s, boot, seq, idx, volume_ml, reverse_ml, water_total_ml, energy_wh,
  energy_total_wh, power_w, voltage_dv, pressure_min_pa, pressure_avg_pa, pressure_max_pa, time_synced, backfill`
const VALUES = `'fleet-' || lpad(m::text, 6, '0'), $1::timestamptz + s * interval '15 minutes', 900, 1, s / 4 + 1,
  s % 4, 10, 0, 10 * (s + 1), 1, s + 1, 100, 2300, 1, 2, 3, true, false`

/** Seeds `meters` meters × `perMeter` 15-minute readings; the newest has water_total_ml = 10 × perMeter. */
export async function seedFleet(store: Store, meters: number, perMeter: number) {
  const db = (store as SqlStore).db
  await db.query(
    `INSERT INTO meters (meter_id, online, first_seen, last_seen, boot, interval_s, batch)
     SELECT 'fleet-' || lpad(m::text, 6, '0'), true, $1, $1, 1, 900, 4 FROM generate_series(1, $2) m`,
    [FLEET_T0, meters],
  )
  // readings are partitioned by month: the seed's months need theirs (ingest makes its own)
  await (store as SqlStore).ensurePartitions(new Date(FLEET_T0), new Date(Date.parse(FLEET_T0) + perMeter * 900_000))
  const chunk = 10_000 // bounded statements: PGlite holds a statement's work in memory
  for (let lo = 1; lo <= meters; lo += chunk) {
    const hi = Math.min(meters, lo + chunk - 1)
    await db.query(
      `INSERT INTO readings (${COLUMNS}) SELECT ${VALUES}
       FROM generate_series($2::int, $3::int) m, generate_series(0, $4::int - 1) s`,
      [FLEET_T0, lo, hi, perMeter],
    )
    await db.query(
      `INSERT INTO meter_latest (${COLUMNS}) SELECT ${VALUES}
       FROM generate_series($2::int, $3::int) m, generate_series($4::int - 1, $4::int - 1) s`,
      [FLEET_T0, lo, hi, perMeter],
    )
  }
  await db.query(`ANALYZE`)
}

/** What a query plan of the fleet-wide latest call reads (table names). */
export async function latestPlanTables(store: Store): Promise<string> {
  const { rows } = await (store as SqlStore).db.query<Record<string, string>>(
    `EXPLAIN SELECT * FROM meter_latest WHERE ($1::text IS NULL OR meter_id > $1) ORDER BY meter_id LIMIT $2`,
    [null, 1_000_000],
  )
  return rows.map((r) => Object.values(r)[0]).join("\n")
}
