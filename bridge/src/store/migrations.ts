// The data tier's schema as numbered steps. Step N runs once, in a transaction of its own that
// also records N in schema_version; bridges starting together queue on an advisory lock, so
// each step runs exactly once. To change the schema, append a step (never edit a landed one).
import { AFTER_REBOOT_STEP, READING_COLUMNS, TS_ESTIMATED_STEP, columnDdl, type ReadingColumn } from "./columns.js"
import { DEAD_LETTER_HEAD_BYTES } from "./store.js"
import { partitionReadings, timescaleAvailable } from "./partitions.js"
import { RELEASES_DDL } from "./releases.js"
import { ROLLOUTS_DDL } from "./rollouts.js"
import { DISTRICT_MONTH_STEP } from "./district-rollups.js"
import { compactionStep } from "./compaction.js"
import { DMA_NETWORK_DDL, DMAS_DDL } from "./dmas.js"
import { DMA_DAYS_DDL, FILL as DMA_DAYS_FILL } from "./dma-days.js"
import { LEDGER_BLOCKS_DDL } from "./ledger-blocks.js"
import { districtDayDdl, fillSql, rollupDdl, ROLLUPS, settleDistrictsSql } from "./rollups.js"
import type { Db } from "./db.js"

export interface MigrationStep {
  /** What the step does; recorded beside its version in schema_version. */
  name: string
  /** Statements run in order, or a function for steps that depend on the engine ("postgres", "pglite"). */
  up: string[] | ((tx: Db, engine: string) => Promise<void>)
}

/** Reading columns created by step 1 (later columns name the step that adds them, columns.ts). */
const baseColumns = (cs: readonly ReadingColumn[]) => cs.filter((c) => !c.added)
const BASE_DDL = baseColumns(READING_COLUMNS).map(columnDdl).join(", ")
const BASE_NAMES = baseColumns(READING_COLUMNS)
  .map((c) => c.column)
  .join(", ")

/** A step adding the reading columns that name it to readings and meter_latest (same columns, columns.ts). */
export function addReadingColumns(step: string): MigrationStep {
  const cs = READING_COLUMNS.filter((c) => c.added?.step === step)
  if (!cs.length) throw new Error(`no reading column is added by step ${step}`)
  return {
    name: step,
    up: ["readings", "meter_latest"].flatMap((t) =>
      cs.map((c) => `ALTER TABLE ${t} ADD COLUMN IF NOT EXISTS ${columnDdl(c)}`),
    ),
  }
}

export const MIGRATIONS: readonly MigrationStep[] = [
  {
    // The schema as it was before steps were numbered: every statement is idempotent (IF NOT
    // EXISTS), so a data tier created before schema_version existed runs it as a no-op (and one
    // from before the later features gets their tables and columns) and is recorded at version 1.
    // the name is stored in schema_version: "issues 1-11" are the feature sets the project had then
    name: "schema before versions (issues 1-11)",
    up: [
      `CREATE TABLE IF NOT EXISTS meters (
         meter_id text PRIMARY KEY,
         online boolean NOT NULL DEFAULT false,
         first_seen timestamptz NOT NULL,
         last_seen timestamptz NOT NULL,
         firmware text, board text, boot bigint, interval_s integer, batch integer,
         uptime_epoch_ms double precision)`,
      // The frame ledger: one row per stored (meter, boot, seq) — the exactly-once key.
      `CREATE TABLE IF NOT EXISTS frames (
         meter_id text NOT NULL, boot bigint NOT NULL, seq bigint NOT NULL,
         kind text NOT NULL, received_at timestamptz NOT NULL,
         PRIMARY KEY (meter_id, boot, seq))`,
      `CREATE TABLE IF NOT EXISTS readings (${BASE_DDL}, PRIMARY KEY (meter_id, boot, seq, idx))`,
      `CREATE INDEX IF NOT EXISTS readings_meter_ts ON readings (meter_id, ts)`,
      `CREATE TABLE IF NOT EXISTS alarms (
         meter_id text NOT NULL, boot bigint NOT NULL, seq bigint NOT NULL,
         type text NOT NULL, active boolean NOT NULL, ts timestamptz NOT NULL, value bigint NOT NULL,
         PRIMARY KEY (meter_id, boot, seq))`,
      `CREATE TABLE IF NOT EXISTS dead_letters (
         id bigserial PRIMARY KEY, received_at timestamptz NOT NULL, topic text NOT NULL,
         meter_id text, reason text NOT NULL, detail text NOT NULL, payload bytea NOT NULL)`,
      // inactivity, bridge-raised alarms, the fleet-wide latest reading.
      `ALTER TABLE meters ADD COLUMN IF NOT EXISTS inactive boolean NOT NULL DEFAULT false`,
      `CREATE INDEX IF NOT EXISTS meters_online ON meters (meter_id) WHERE online`,
      `CREATE INDEX IF NOT EXISTS alarms_meter_type_ts ON alarms (meter_id, type, ts)`,
      `CREATE TABLE IF NOT EXISTS bridge_alarms (
         id bigserial PRIMARY KEY, meter_id text NOT NULL, type text NOT NULL, active boolean NOT NULL,
         ts timestamptz NOT NULL, value bigint NOT NULL)`,
      `CREATE INDEX IF NOT EXISTS bridge_alarms_meter_type_ts ON bridge_alarms (meter_id, type, ts)`,
      // Every alarm edge, meter-sent and bridge-raised; bridge alarms have boot 0 and seq = their id.
      `CREATE OR REPLACE VIEW alarm_events AS
         SELECT meter_id, boot, seq, type, active, ts, value, 'meter'::text AS source FROM alarms
         UNION ALL
         SELECT meter_id, 0::bigint, id, type, active, ts, value, 'bridge'::text FROM bridge_alarms`,
      // The newest reading per meter, upserted in the same transaction as the frame's readings, so
      // "latest for the whole fleet" reads one row per meter instead of scanning readings.
      `CREATE TABLE IF NOT EXISTS meter_latest (${BASE_DDL}, PRIMARY KEY (meter_id))`,
      // Fills meter_latest once for a data tier from before it existed (a no-op afterwards).
      `INSERT INTO meter_latest (${BASE_NAMES})
         SELECT DISTINCT ON (meter_id) ${BASE_NAMES}
         FROM readings WHERE NOT EXISTS (SELECT 1 FROM meter_latest)
         ORDER BY meter_id, ts DESC, boot DESC, seq DESC, idx DESC
       ON CONFLICT DO NOTHING`,
      // hostile input: the ledger keeps each frame's content hash (a same-id frame with other content is a
      // conflict, not a duplicate); liveness knows the birth it belongs to; dead letters are bounded.
      `ALTER TABLE frames ADD COLUMN IF NOT EXISTS sha256 text`,
      `ALTER TABLE meters ADD COLUMN IF NOT EXISTS birth_seq bigint`,
      `ALTER TABLE meters ADD COLUMN IF NOT EXISTS born_at timestamptz`,
      `ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS payload_bytes integer`,
      `ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS payload_sha256 text`,
      `ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS stored_sha256 text`,
      // dead letters from before: keep the first DEAD_LETTER_HEAD_BYTES bytes, their size and hash
      `UPDATE dead_letters SET payload_bytes = length(payload), payload_sha256 = encode(sha256(payload), 'hex'),
         payload = substring(payload FROM 1 FOR ${DEAD_LETTER_HEAD_BYTES}) WHERE payload_bytes IS NULL`,
      `CREATE INDEX IF NOT EXISTS dead_letters_received_at ON dead_letters (received_at)`,
      // sealed frames. Meters registered before default to open (they have no key).
      `ALTER TABLE meters ADD COLUMN IF NOT EXISTS birth_link bigint`,
      `ALTER TABLE meters ADD COLUMN IF NOT EXISTS seal_policy text NOT NULL DEFAULT 'open'`,
      `ALTER TABLE meters ADD COLUMN IF NOT EXISTS seal_key bytea`,
      `ALTER TABLE meters ADD COLUMN IF NOT EXISTS seal_key_next bytea`,
      // what a meter measures and which alarm rules it evaluates (proto Birth 12, 13)
      `ALTER TABLE meters ADD COLUMN IF NOT EXISTS channels text[]`,
      `ALTER TABLE meters ADD COLUMN IF NOT EXISTS alarm_rules text[]`,
    ],
  },
  // a reading whose ts is the bridge's estimate says so
  addReadingColumns(TS_ESTIMATED_STEP),
  {
    // the dashboard: the queue figures of the last birth, where a meter is, and
    // operators' acknowledgements of alarm edges ((meter, boot, seq) as alarm_events has them)
    name: "meter queue figures and location, alarm acknowledgements",
    up: [
      `ALTER TABLE meters ADD COLUMN IF NOT EXISTS queued integer`,
      `ALTER TABLE meters ADD COLUMN IF NOT EXISTS dropped integer`,
      `ALTER TABLE meters ADD COLUMN IF NOT EXISTS lat double precision`,
      `ALTER TABLE meters ADD COLUMN IF NOT EXISTS lon double precision`,
      `ALTER TABLE meters ADD COLUMN IF NOT EXISTS address text`,
      `ALTER TABLE meters ADD COLUMN IF NOT EXISTS district text`,
      `CREATE INDEX IF NOT EXISTS meters_district ON meters (district)`,
      `CREATE TABLE IF NOT EXISTS alarm_acks (
         meter_id text NOT NULL, boot bigint NOT NULL, seq bigint NOT NULL,
         acked_by text NOT NULL, acked_at timestamptz NOT NULL, note text NOT NULL,
         PRIMARY KEY (meter_id, boot, seq))`,
    ],
  },
  {
    // a year of a city; a TimescaleDB hypertable where the extension can be created
    name: "readings partitioned by month of ts",
    up: async (tx, engine) => {
      if (engine === "postgres" && (await timescaleAvailable(tx))) {
        await tx.query(`SAVEPOINT timescale`)
        try {
          await partitionReadings(tx, true)
          return
        } catch {
          // not allowed to create the extension here: declarative partitions instead
          await tx.query(`ROLLBACK TO SAVEPOINT timescale`)
        }
      }
      await partitionReadings(tx, false)
    },
  },
  {
    // consumption by hour and day without scanning readings (store/rollups.ts)
    name: "consumption rollups by hour and day",
    up: ROLLUPS.flatMap((r) => [rollupDdl(r), fillSql(r)]),
  },
  {
    // the fleet by day without a row per meter (store/rollups.ts)
    name: "consumption per district and day",
    up: [...districtDayDdl, settleDistrictsSql(`SELECT meter_id, bucket FROM rollup_day`)],
  },
  // the first interval after a meter restarted says its counts may be incomplete (issue 20)
  addReadingColumns(AFTER_REBOOT_STEP),
  {
    // what a meter's last birth said of writes its flash store refused (proto Birth 14)
    name: "meters.unstored",
    up: [`ALTER TABLE meters ADD COLUMN IF NOT EXISTS unstored integer`],
  },
  {
    // signed programs per board and version, for fleet updates (issue 23 item 3; store/releases.ts)
    name: "releases",
    up: RELEASES_DDL,
  },
  {
    // each meter's WSSK link key, the runtime's own cloud link (issue 23; store/link-keys.ts)
    name: "meters.wssk_key",
    up: [`ALTER TABLE meters ADD COLUMN IF NOT EXISTS wssk_key bytea`],
  },
  {
    // a release sent to the fleet in stages, and each meter's way through it (issue 23; store/rollouts.ts)
    name: "rollouts",
    up: ROLLOUTS_DDL,
  },
  {
    // the fleet by month without a row per meter, and rollup_day written once per batch (issue 24
    // item 3; store/district-rollups.ts)
    name: "consumption per district and month",
    up: DISTRICT_MONTH_STEP,
  },
  {
    // older months compacted into a block per meter and month, read through one path (issue 24
    // items 1-2; store/blocks.ts, store/compaction.ts)
    name: "reading blocks",
    up: (tx) => compactionStep(tx),
  },
  {
    // the frame ledger's cold form: 8-byte digests in blocks of seqs, deduplicating forever at a
    // fraction of a row's size (issue 24 item 2; store/ledger-blocks.ts)
    name: "frame ledger blocks",
    up: LEDGER_BLOCKS_DDL,
  },
  {
    // district metered areas, their bulk and customer meters (issue 25 item 1; store/dmas.ts)
    name: "district metered areas",
    up: DMAS_DDL,
  },
  {
    // each DMA's apparent-loss thresholds, mains length and connections for the ILI (issue 25 items 4-5)
    name: "dma losses settings and network size",
    up: DMA_NETWORK_DDL,
  },
  {
    // the DMAs' customers per registry district and day, and complete meter-months, so the balance
    // of every DMA reads a row per district and day (issue 25 "Measure"; store/dma-days.ts)
    name: "dma district days",
    up: [...DMA_DAYS_DDL, ...DMA_DAYS_FILL],
  },
]

/** A schema_version newer than the steps this bridge knows: an older bridge must not write to it. */
export class SchemaTooNewError extends Error {}

/** pg_advisory_xact_lock's first key for migrations ("cm" in ASCII); the second is the schema's hash. */
export const MIGRATION_LOCK_CLASS = 0x636d

/**
 * Brings the schema to the last step. Each step's transaction first takes the per-schema
 * advisory lock, then reads the version: a bridge that waited finds the step done and skips it.
 * Returns the versions this call applied.
 */
export async function migrate(db: Db, engine: string, steps: readonly MigrationStep[] = MIGRATIONS) {
  const applied: number[] = []
  for (;;) {
    const done = await db.transaction(async (tx) => {
      await tx.query(`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_CLASS}, hashtext(current_schema()))`)
      await tx.query(`CREATE TABLE IF NOT EXISTS schema_version (
         version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`)
      const { rows } = await tx.query<{ v: number | null }>(`SELECT max(version) AS v FROM schema_version`)
      const current = Number(rows[0].v ?? 0)
      if (current > steps.length)
        throw new SchemaTooNewError(
          `the data tier is at schema version ${current}; this bridge knows ${steps.length} steps (upgrade the bridge)`,
        )
      if (current === steps.length) return true
      const step = steps[current]
      if (typeof step.up === "function") await step.up(tx, engine)
      else for (const sql of step.up) await tx.query(sql)
      await tx.query(`INSERT INTO schema_version (version, name) VALUES ($1, $2)`, [current + 1, step.name])
      applied.push(current + 1)
      return false
    })
    if (done) return applied
  }
}
