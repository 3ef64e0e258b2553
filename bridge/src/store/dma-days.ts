// The DMAs' customers per registry district and UTC day, kept in the ingest transaction (issue 25,
// "Measure"), so the balance of every DMA for a day or a month reads a row per district and day
// instead of a row per meter and day (store/dma-balance.ts).
//
// A DMA's customers are the meters whose registry district is now the DMA's id, plus explicit
// members (store/dmas.ts). Explicit members are few (the bulk meters, some named customers): the
// balance computes them per meter at each read. The district's meters are summed here, keyed by
// the meter's district NOW (meters.district), not by the district it had when the day was
// written (rollup_day.district, the fleet's view): a meter that moves takes its whole history
// along (a trigger on meters.district moves it, whatever writes the column). An explicit member
// registered in its DMA's district is subtracted at read time (it counts with its explicit role).
//
// Per meter and day row (rollup_day), what the per-meter balance computes from the row and its
// meter's previous row (ROW_TERMS): the water by the rule (ConsumptionRow: its first reading
// charged against the previous row's last total) and whether the day is complete (no gap, its
// last interval reaches the day's end, its first one starts where the previous row ended or, for
// a meter's first row, at the day's start). Kept:
//   dma_district_day   (district, bucket): Σ water, count of complete meter-days;
//   dma_meter_month    (meter, UTC month): its complete days (a meter-month is complete when all
//                      its days are);
//   dma_district_month (district, UTC month): meters complete for every day of the month;
//   dma_district_meters (district): its meters now (the trigger keeps it).
// A batch reads the terms of the day rows it touches and of the next row of each (whose first
// charge and completeness depend on the touched row) before writing them (BEFORE_SQL), and adds
// the differences after (SETTLE_SQL): a late frame changes exactly the days (and their months) it
// touches, the next stored day included. The meter rows are locked by the batch (touchMeters)
// before its readings are written, so a district change waits for the batch and then moves what
// it committed, or the batch waits and counts in the new district.
import type { Db } from "./db.js"

export const DISTRICT_DAYS = "dma_district_day"
export const METER_MONTHS = "dma_meter_month"
export const DISTRICT_MONTHS = "dma_district_month"
export const DISTRICT_METERS = "dma_district_meters"

/** Days in the UTC month starting at `col` (a timestamptz), computed in UTC whatever the session's zone. */
export const daysIn = (col: string) =>
  `extract(day FROM ((${col} AT TIME ZONE 'UTC') + interval '1 month' - interval '1 day'))::integer`

/**
 * A day row t's terms, with p_total, p_end the previous row's last water total and end (NULL for
 * the meter's first row): the per-meter rule of store/dma-balance.ts (its water NULL taken as 0).
 */
export const WATER = `COALESCE(t.water_used, 0) + COALESCE(CASE WHEN t.first_water_total_ml >= t.p_total
    THEN t.first_water_total_ml - t.p_total ELSE t.first_volume_ml END, 0)`
export const COMPLETE = `(NOT t.gap AND t.last_end >= t.bucket + interval '1 day'
    AND CASE WHEN t.p_end IS NULL THEN t.first_ts <= t.bucket ELSE t.p_end >= t.first_ts END)`

/** The day rows of the keys in CTE `keys` (meter_id, bucket), each with its terms: (meter_id, bucket, water, complete). */
const termsOf = (keys: string) => `SELECT t.meter_id, t.bucket, ${WATER} AS water, ${COMPLETE} AS complete
    FROM (SELECT r.*, p.p_total, p.p_end FROM ${keys} a
      JOIN rollup_day r ON r.meter_id = a.meter_id AND r.bucket = a.bucket
      LEFT JOIN LATERAL (
        SELECT q.last_water_total_ml AS p_total, q.last_end AS p_end FROM rollup_day q
        WHERE q.meter_id = r.meter_id AND q.bucket < r.bucket ORDER BY q.bucket DESC LIMIT 1) p ON true) t`

/** Every day row of the meters `where` selects (a condition on rollup_day r), with its terms. */
const allTermsOf = (where: string) => `SELECT t.meter_id, t.bucket, ${WATER} AS water, ${COMPLETE} AS complete
    FROM (SELECT r.*, LAG(r.last_water_total_ml) OVER w AS p_total, LAG(r.last_end) OVER w AS p_end
      FROM rollup_day r WHERE ${where} WINDOW w AS (PARTITION BY r.meter_id ORDER BY r.bucket)) t`

/** The keys $1 (meter ids), $2 (day starts, epoch ms): CTE k. */
const KEYS = `k AS (SELECT u.meter_id, to_timestamp(u.ms / 1000) AS bucket
      FROM unnest($1::text[], $2::float8[]) AS u(meter_id, ms))`

/** Before a batch's day rows are written ($1 meter ids, $2 day starts in epoch ms): the terms of those rows and of their next rows. Reads only. */
export const BEFORE_SQL = `WITH ${KEYS},
    a AS (
      SELECT meter_id, bucket FROM k
      UNION
      SELECT n.meter_id, n.bucket FROM k CROSS JOIN LATERAL (
        SELECT t.meter_id, t.bucket FROM rollup_day t WHERE t.meter_id = k.meter_id AND t.bucket > k.bucket
        ORDER BY t.bucket LIMIT 1) n)
  SELECT c.meter_id, extract(epoch FROM c.bucket)::float8 * 1000 AS ms, c.water, c.complete FROM (${termsOf("a")}) c`

export interface DmaBeforeRow {
  meter_id: string
  ms: number
  water: string | number
  complete: boolean
}

/** SETTLE_SQL's parameters: the batch's day keys, then BEFORE_SQL's rows by column. */
export const settleParams = (days: unknown[][], before: DmaBeforeRow[]): unknown[] => [
  days[0],
  days[1],
  before.map((r) => r.meter_id),
  before.map((r) => Number(r.ms)),
  before.map((r) => String(r.water)),
  before.map((r) => r.complete),
]

const upsertDays = (from: string) => `INSERT INTO ${DISTRICT_DAYS} AS d (district, bucket, water, complete)
    ${from}
    ON CONFLICT (district, bucket) DO UPDATE SET water = d.water + EXCLUDED.water, complete = d.complete + EXCLUDED.complete`

const upsertMonths = (from: string) => `INSERT INTO ${DISTRICT_MONTHS} AS d (district, month, complete)
    ${from}
    ON CONFLICT (district, month) DO UPDATE SET complete = d.complete + EXCLUDED.complete`

/**
 * After the batch's day rows are written: the same rows' terms now (the keys, their next rows and
 * the rows read before), minus the terms before, added to their meters' districts' days, to the
 * meter-months' complete days, and to the districts' months whose meters became complete for
 * every day or stopped being. One lock order (district, bucket) for concurrent ingest lanes.
 */
export const SETTLE_SQL = `WITH ${KEYS},
    -- the rows read before and the keys: a key's next row now is a key, or the next row it had
    -- before (rows are only added), so no next row needs looking up again
    a AS (
      SELECT meter_id, bucket FROM k
      UNION
      SELECT u.meter_id, to_timestamp(u.ms / 1000) FROM unnest($3::text[], $4::float8[]) AS u(meter_id, ms)),
    x AS (
      SELECT meter_id, bucket, water, complete::integer AS n FROM (${termsOf("a")}) c
      UNION ALL
      SELECT meter_id, to_timestamp(ms / 1000), -water, -(complete::integer)
      FROM unnest($3::text[], $4::float8[], $5::bigint[], $6::boolean[]) AS o(meter_id, ms, water, complete)),
    -- each row's meter's district by its key (a join would scan every meter)
    xd AS (SELECT x.*, (SELECT m.district FROM meters m WHERE m.meter_id = x.meter_id) AS district FROM x),
    days AS (${upsertDays(`SELECT district, bucket, sum(water), sum(n) FROM xd WHERE district IS NOT NULL
      GROUP BY district, bucket HAVING sum(water) <> 0 OR sum(n) <> 0 ORDER BY district, bucket`)}),
    mm AS (
      SELECT meter_id, district, date_trunc('month', bucket, 'UTC') AS month, sum(n)::integer AS n FROM xd
      GROUP BY meter_id, district, 3 HAVING sum(n) <> 0),
    months AS (
      INSERT INTO ${METER_MONTHS} AS t (meter_id, month, complete_days)
      SELECT meter_id, month, n FROM mm ORDER BY meter_id, month
      ON CONFLICT (meter_id, month) DO UPDATE SET complete_days = t.complete_days + EXCLUDED.complete_days
      RETURNING meter_id, month, complete_days)
  ${upsertMonths(`SELECT mm.district, mm.month, sum(
        CASE WHEN s.complete_days = ${daysIn("mm.month")} THEN 1 ELSE 0 END
        - CASE WHEN s.complete_days - mm.n = ${daysIn("mm.month")} THEN 1 ELSE 0 END)
      FROM months s JOIN mm ON mm.meter_id = s.meter_id AND mm.month = s.month
      WHERE mm.district IS NOT NULL GROUP BY mm.district, mm.month
      HAVING sum(CASE WHEN s.complete_days = ${daysIn("mm.month")} THEN 1 ELSE 0 END
        - CASE WHEN s.complete_days - mm.n = ${daysIn("mm.month")} THEN 1 ELSE 0 END) <> 0
      ORDER BY mm.district, mm.month`)}`

/**
 * The tables, filled from rollup_day and meters (the migration step; a bench that seeds
 * rollup_day with SQL runs FILL), and the trigger that moves a meter's days and complete months
 * when its district changes (or it is registered with one, or removed).
 */
export const DMA_DAYS_DDL = [
  `CREATE TABLE IF NOT EXISTS ${DISTRICT_DAYS} (district text NOT NULL, bucket timestamptz NOT NULL,
     water bigint NOT NULL, complete integer NOT NULL, PRIMARY KEY (district, bucket))`,
  `CREATE TABLE IF NOT EXISTS ${METER_MONTHS} (meter_id text NOT NULL, month timestamptz NOT NULL,
     complete_days integer NOT NULL, PRIMARY KEY (meter_id, month))`,
  `CREATE TABLE IF NOT EXISTS ${DISTRICT_MONTHS} (district text NOT NULL, month timestamptz NOT NULL,
     complete integer NOT NULL, PRIMARY KEY (district, month))`,
  `CREATE TABLE IF NOT EXISTS ${DISTRICT_METERS} (district text PRIMARY KEY, meters integer NOT NULL)`,
  // adds (way 1) or takes away (-1) a meter, its days and its complete months in a district
  `CREATE OR REPLACE FUNCTION dma_days_move(the_meter text, the_district text, way integer) RETURNS void
   LANGUAGE sql AS $$
     ${upsertDays(`SELECT the_district, c.bucket, way * c.water, way * c.complete::integer
       FROM (${allTermsOf("r.meter_id = the_meter")}) c WHERE c.water <> 0 OR c.complete ORDER BY c.bucket`)};
     ${upsertMonths(`SELECT the_district, month, way FROM ${METER_MONTHS}
       WHERE meter_id = the_meter AND complete_days = ${daysIn("month")} ORDER BY month`)};
     INSERT INTO ${DISTRICT_METERS} AS d (district, meters) VALUES (the_district, way)
     ON CONFLICT (district) DO UPDATE SET meters = d.meters + EXCLUDED.meters;
   $$`,
  `CREATE OR REPLACE FUNCTION dma_days_meter_district() RETURNS trigger LANGUAGE plpgsql AS $$
   BEGIN
     IF TG_OP <> 'INSERT' AND OLD.district IS NOT NULL THEN PERFORM dma_days_move(OLD.meter_id, OLD.district, -1); END IF;
     IF TG_OP <> 'DELETE' AND NEW.district IS NOT NULL THEN PERFORM dma_days_move(NEW.meter_id, NEW.district, 1); END IF;
     RETURN NULL;
   END $$`,
  `DROP TRIGGER IF EXISTS dma_days_district_moved ON meters`,
  `CREATE TRIGGER dma_days_district_moved AFTER UPDATE OF district ON meters
     FOR EACH ROW WHEN (OLD.district IS DISTINCT FROM NEW.district) EXECUTE FUNCTION dma_days_meter_district()`,
  `DROP TRIGGER IF EXISTS dma_days_district_added ON meters`,
  `CREATE TRIGGER dma_days_district_added AFTER INSERT ON meters
     FOR EACH ROW WHEN (NEW.district IS NOT NULL) EXECUTE FUNCTION dma_days_meter_district()`,
  `DROP TRIGGER IF EXISTS dma_days_district_removed ON meters`,
  `CREATE TRIGGER dma_days_district_removed AFTER DELETE ON meters
     FOR EACH ROW WHEN (OLD.district IS NOT NULL) EXECUTE FUNCTION dma_days_meter_district()`,
]

/** Empties and refills the three tables from every rollup_day row (migration step; benches seeding rollup_day). */
export const FILL = [
  `TRUNCATE ${DISTRICT_DAYS}, ${METER_MONTHS}, ${DISTRICT_MONTHS}, ${DISTRICT_METERS}`,
  `INSERT INTO ${DISTRICT_METERS} (district, meters)
   SELECT district, count(*) FROM meters WHERE district IS NOT NULL GROUP BY district`,
  `CREATE TEMP TABLE dma_days_terms ON COMMIT DROP AS ${allTermsOf("true")}`,
  upsertDays(`SELECT m.district, c.bucket, sum(c.water), count(*) FILTER (WHERE c.complete)
     FROM dma_days_terms c JOIN meters m ON m.meter_id = c.meter_id WHERE m.district IS NOT NULL
     GROUP BY m.district, c.bucket`),
  `INSERT INTO ${METER_MONTHS} (meter_id, month, complete_days)
   SELECT meter_id, date_trunc('month', bucket, 'UTC'), count(*) FROM dma_days_terms WHERE complete GROUP BY 1, 2`,
  upsertMonths(`SELECT m.district, t.month, count(*) FROM ${METER_MONTHS} t JOIN meters m ON m.meter_id = t.meter_id
     WHERE m.district IS NOT NULL AND t.complete_days = ${daysIn("t.month")} GROUP BY m.district, t.month`),
  `DROP TABLE dma_days_terms`,
]

/** Runs FILL in a transaction of its own (benches and tests that write rollup_day directly). */
export const refillDmaDays = (db: Db) =>
  db.transaction(async (tx) => {
    for (const sql of FILL) await tx.query(sql)
  })
