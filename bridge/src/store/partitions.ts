// readings partitioned by month of ts (PostgreSQL declarative partitioning, on both engines). A
// partition is created ahead (the current and next months) and on demand in the ingest
// transaction that needs it, so a late backfill into any old month finds one. Retention drops
// whole partitions. Where TimescaleDB is installed, readings is a hypertable instead.
import type { Db } from "./db.js"
import type { ReadingsMaintenance } from "./store.js"

/** What the writes need of their store: whether readings is partitioned, and the months known to have a partition. */
export interface PartitionState {
  partitioned: boolean
  /** Forgotten after any failed batch: the partitions it made were rolled back. */
  months: Set<string>
}

/** "YYYYMM" of a time's UTC month. */
export const monthKey = (t: Date) => `${t.getUTCFullYear()}${String(t.getUTCMonth() + 1).padStart(2, "0")}`
const PARTITION = /^readings_p(\d{4})(\d{2})$/
export const partitionName = (key: string) => `readings_p${key}`

/** [start, end) of a month key, as ISO 8601. */
export function monthRange(key: string): [string, string] {
  const y = Number(key.slice(0, 4))
  const m = Number(key.slice(4)) - 1
  return [new Date(Date.UTC(y, m, 1)).toISOString(), new Date(Date.UTC(y, m + 1, 1)).toISOString()]
}

/** A class of pg_advisory_xact_lock keys for partition creation ("cp"). */
const LOCK_CLASS = 0x6370

/**
 * Creates the month's partition unless it exists. Created as a table, then attached: ATTACH takes
 * SHARE UPDATE EXCLUSIVE on readings, which concurrent inserts (ROW EXCLUSIVE) do not conflict
 * with, where CREATE TABLE … PARTITION OF would lock them out. Bridges creating the same month
 * queue on an advisory lock, and the second finds it made.
 */
export async function ensurePartition(tx: Db, key: string) {
  const name = partitionName(key)
  await tx.query(`SELECT pg_advisory_xact_lock(${LOCK_CLASS}, hashtext(current_schema() || '.' || $1))`, [name])
  const [from, to] = monthRange(key)
  // the hourly rollup is partitioned by the same months from issue 24 on (compaction truncates them)
  const hour = `rollup_hour_p${key}`
  const { rows } = await tx.query<{ r: string | null; h: string | null; p: boolean | null }>(
    `SELECT to_regclass($1)::text AS r, to_regclass($2)::text AS h,
       (SELECT relkind FROM pg_class WHERE oid = to_regclass('rollup_hour')) = 'p' AS p`,
    [name, hour],
  )
  for (const [table, part, missing] of [
    ["readings", name, rows[0].r === null],
    ["rollup_hour", hour, rows[0].h === null && rows[0].p === true],
  ] as const) {
    if (!missing) continue
    await tx.query(`CREATE TABLE ${part} (LIKE ${table} INCLUDING DEFAULTS)`)
    await tx.query(`ALTER TABLE ${table} ATTACH PARTITION ${part} FOR VALUES FROM ('${from}') TO ('${to}')`)
  }
}

/** The month keys of readings' partitions. */
export async function listPartitions(db: Db): Promise<string[]> {
  const { rows } = await db.query<{ name: string }>(
    `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = 'readings'::regclass`,
  )
  return rows
    .map((r) => PARTITION.exec(r.name))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => m[1] + m[2])
    .sort()
}

/** Whether readings is a partitioned table (relkind 'p'). */
export async function isPartitioned(db: Db): Promise<boolean> {
  const { rows } = await db.query<{ k: string }>(
    `SELECT relkind::text AS k FROM pg_class WHERE oid = 'readings'::regclass`,
  )
  return rows[0]?.k === "p"
}

/**
 * Migration step: readings becomes partitioned by month (rows copied into one partition per
 * month they fall in). A partitioned table's unique keys must hold the partition column, so the
 * primary key gains ts: (meter_id, boot, seq, idx, ts). Exactly-once is the frame ledger's job
 * (frames, keyed (meter, boot, seq), claimed before any row is written); the key only guards
 * against a claimed frame's rows written twice.
 */
export async function partitionReadings(tx: Db, timescale: boolean) {
  if (timescale) {
    await tx.query(`CREATE EXTENSION IF NOT EXISTS timescaledb`)
    await tx.query(`ALTER TABLE readings DROP CONSTRAINT IF EXISTS readings_pkey`)
    await tx.query(`ALTER TABLE readings ADD PRIMARY KEY (meter_id, boot, seq, idx, ts)`)
    await tx.query(`SELECT create_hypertable('readings', 'ts', migrate_data => true, if_not_exists => true)`)
    return
  }
  await tx.query(`ALTER TABLE readings RENAME TO readings_unpartitioned`)
  await tx.query(`ALTER TABLE readings_unpartitioned RENAME CONSTRAINT readings_pkey TO readings_unpartitioned_pkey`)
  await tx.query(`ALTER INDEX readings_meter_ts RENAME TO readings_unpartitioned_meter_ts`)
  await tx.query(`CREATE TABLE readings (LIKE readings_unpartitioned INCLUDING DEFAULTS) PARTITION BY RANGE (ts)`)
  await tx.query(`ALTER TABLE readings ADD PRIMARY KEY (meter_id, boot, seq, idx, ts)`)
  await tx.query(`CREATE INDEX readings_meter_ts ON readings (meter_id, ts)`)
  const { rows } = await tx.query<{ t: Date }>(
    `SELECT DISTINCT date_trunc('month', ts, 'UTC') AS t FROM readings_unpartitioned`,
  )
  for (const r of rows) await ensurePartition(tx, monthKey(new Date(r.t)))
  await tx.query(`INSERT INTO readings SELECT * FROM readings_unpartitioned`)
  await tx.query(`DROP TABLE readings_unpartitioned`)
}

/** Whether the TimescaleDB extension can be used here. */
export async function timescaleAvailable(db: Db): Promise<boolean> {
  return db
    .query(`SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'`)
    .then((r) => r.rows.length > 0)
    .catch(() => false)
}

/**
 * Makes the partitions of readings for every month in [from, to), in one transaction (for tools
 * that write readings with their own SQL, as benchmarks' seeds do; ingest makes its own).
 */
export async function ensurePartitions(db: Db, from: Date, to: Date) {
  await db.transaction(async (tx) => {
    const d = new Date(Date.UTC(from.getUTCFullYear(), from.getUTCMonth(), 1))
    for (; d < to; d.setUTCMonth(d.getUTCMonth() + 1)) await ensurePartition(tx, monthKey(d))
  })
}

/**
 * Partitions for this month and the next two made ahead; with retentionDays, the partitions
 * (TimescaleDB chunks; rows of a plain table) wholly older than that dropped. Rollups are kept.
 */
export async function maintainReadings(
  db: Db,
  parts: PartitionState & { hypertable: boolean },
  now: Date,
  retentionDays?: number,
): Promise<ReadingsMaintenance> {
  const out: ReadingsMaintenance = { created: [], dropped: [], deletedRows: 0, deletedBlocks: 0 }
  const cutoff = retentionDays === undefined ? undefined : new Date(now.getTime() - retentionDays * 86_400_000)
  if (parts.partitioned) {
    const have = new Set(await listPartitions(db))
    for (let i = 0; i < 3; i++) {
      const key = monthKey(new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + i, 1)))
      if (have.has(key)) continue
      await db.transaction((tx) => ensurePartition(tx, key))
      out.created.push(key)
    }
    if (cutoff)
      for (const key of have)
        if (Date.parse(monthRange(key)[1]) <= cutoff.getTime()) {
          // DROP TABLE of a partition locks readings briefly (ACCESS EXCLUSIVE): one statement per month
          await db.query(`DROP TABLE IF EXISTS ${partitionName(key)}`)
          parts.months.delete(key)
          out.dropped.push(key)
        }
  } else if (cutoff && parts.hypertable) {
    const { rows } = await db.query<{ c: string }>(
      `SELECT drop_chunks('readings', older_than => $1::timestamptz)::text AS c`,
      [cutoff],
    )
    out.dropped.push(...rows.map((r) => r.c))
  } else if (cutoff) {
    const { rows } = await db.query<{ n: number }>(
      `WITH gone AS (DELETE FROM readings WHERE ts < $1 RETURNING 1) SELECT count(*) AS n FROM gone`,
      [cutoff],
    )
    out.deletedRows = Number(rows[0].n)
  }
  if (cutoff) {
    // compacted months go whole: a block per meter and month, never a row at a time (issue 24 item 5)
    const { rows } = await db.query<{ n: number }>(
      `WITH gone AS (DELETE FROM reading_blocks WHERE month + interval '1 month' <= $1 RETURNING 1)
       SELECT count(*) AS n FROM gone`,
      [cutoff],
    )
    out.deletedBlocks = Number(rows[0].n)
  }
  return out
}
