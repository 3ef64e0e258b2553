// Compaction of readings (issue 24): months that ended before the hot window are moved from rows
// (`readings`) into one block per meter and month (`reading_blocks`, blocks.ts). Each transaction
// moves a batch of meters: DELETE … RETURNING the rows, merge them into the meter-months' blocks
// (decoded, for a late frame into a month already compacted), write the blocks, commit. A kill or a
// lost connection at any point rolls back the whole batch: each reading is, at every commit, in
// exactly one form. The hourly rollup is complete only from the horizon on (compaction_state):
// its partitions before the horizon are truncated once their months are compacted, and
// /consumption by hour before the horizon reads the readings (consumption.ts).
import {
  BLOCK_COLUMNS,
  BLOCKS_DDL,
  byKey,
  DECODED,
  encodeBlock,
  monthStart,
  READ_PATH_DDL,
  type ExactReading,
} from "./blocks.js"
import type { CompactionOptions, CompactionResult } from "./compaction-store.js"
import type { Db } from "./db.js"
import { ensurePartition, listPartitions, monthKey, monthRange, partitionName } from "./partitions.js"
import { toReading } from "./rows.js"

/** pg_advisory_xact_lock class of compaction ("cz"): one batch at a time across bridges. */
const LOCK_CLASS = 0x637a
const COLUMNS = `${BLOCK_COLUMNS.map((c) => c.array).join(", ")}`
const UPSERT = `INSERT INTO reading_blocks (meter_id, month, n, first_ts, last_ts, ${COLUMNS})
  VALUES ($1, $2, $3, $4, $5, ${BLOCK_COLUMNS.map((c, i) => `$${i + 6}::${c.elem}[]`).join(", ")})
  ON CONFLICT (meter_id, month) DO UPDATE SET n = EXCLUDED.n, first_ts = EXCLUDED.first_ts,
    last_ts = EXCLUDED.last_ts, ${BLOCK_COLUMNS.map((c) => `${c.array} = EXCLUDED.${c.array}`).join(", ")}`
const TS_US = `(extract(epoch FROM ts) * 1000000)::bigint::text AS ts_us`

const exact = (r: Record<string, unknown>): ExactReading => ({ ...toReading(r), tsUs: Number(r.ts_us) })

export async function compactReadings(db: Db, before: Date, opts: CompactionOptions = {}): Promise<CompactionResult> {
  const cutoff = new Date(monthStart(before.getTime()))
  const { rows: h } = await db.query<{ horizon: Date }>(
    `UPDATE compaction_state SET horizon = greatest(horizon, $1) RETURNING horizon`,
    [cutoff],
  )
  const out: CompactionResult = {
    horizon: new Date(h[0].horizon),
    blocks: 0,
    merged: 0,
    readings: 0,
    truncated: [],
    busy: [],
  }
  const per = opts.metersPerTx ?? 50
  let batch = 0
  // month by month, oldest first, so that a transaction moves at most `per` meter-months (ingest
  // waits for no more than that); then anything left before the cutoff (readings not partitioned)
  const months = (await listPartitions(db)).filter((k) => Date.parse(monthRange(k)[1]) <= cutoff.getTime())
  const ranges: [Date | string, Date][] = [
    ...months.map((k): [Date, Date] => [new Date(monthRange(k)[0]), new Date(monthRange(k)[1])]),
    ["-infinity", cutoff],
  ]
  for (const [from, to] of ranges) {
    const { rows: any } = await db.query(`SELECT 1 FROM readings WHERE ts >= $1 AND ts < $2 LIMIT 1`, [from, to])
    const move = async (meters: string[]) => {
      await compactBatch(db, meters, from, to, out)
      await opts.afterBatch?.(++batch)
    }
    if (any.length) {
      // the registry in meter id order, then whatever rows remain (readings of meters not registered)
      let after = ""
      for (;;) {
        const { rows } = await db.query<{ meter_id: string }>(
          `SELECT meter_id FROM meters WHERE meter_id > $1 ORDER BY meter_id LIMIT $2`,
          [after, per],
        )
        if (!rows.length) break
        after = rows[rows.length - 1].meter_id
        await move(rows.map((r) => r.meter_id))
      }
      for (;;) {
        const { rows } = await db.query<{ meter_id: string }>(
          `SELECT DISTINCT meter_id FROM readings WHERE ts >= $1 AND ts < $2 LIMIT $3`,
          [from, to, per],
        )
        if (!rows.length) break
        await move(rows.map((r) => r.meter_id))
      }
    }
  }
  await truncateCompacted(db, cutoff, out)
  return out
}

/** Moves the meters' rows of [from, to) into their blocks, in one transaction. */
async function compactBatch(db: Db, meters: string[], from: Date | string, to: Date, out: CompactionResult) {
  await db.transaction(async (tx) => {
    await tx.query(`SELECT pg_advisory_xact_lock(${LOCK_CLASS}, hashtext(current_schema()))`)
    const { rows } = await tx.query(
      `DELETE FROM readings WHERE meter_id = ANY($1::text[]) AND ts >= $2 AND ts < $3 RETURNING *, ${TS_US}`,
      [meters, from, to],
    )
    if (!rows.length) return
    const groups = new Map<string, ExactReading[]>()
    for (const r of rows) {
      const x = exact(r)
      const k = `${x.meterId}\u0000${monthStart(x.ts.getTime())}`
      const g = groups.get(k)
      if (g) g.push(x)
      else groups.set(k, [x])
    }
    // blocks these rows belong to that exist already: a late frame's month (decoded, then merged)
    const keys = [...groups.values()].map((g) => g[0])
    const { rows: old } = await tx.query(
      `SELECT b.meter_id, d.*, (extract(epoch FROM d.ts) * 1000000)::bigint::text AS ts_us
       FROM unnest($1::text[], $2::timestamptz[]) AS k(meter_id, month)
       JOIN reading_blocks b ON b.meter_id = k.meter_id AND b.month = k.month ${DECODED}`,
      [keys.map((x) => x.meterId), keys.map((x) => new Date(monthStart(x.ts.getTime())))],
    )
    const merged = new Set<string>()
    for (const r of old) {
      const x = exact(r)
      const k = `${x.meterId}\u0000${monthStart(x.ts.getTime())}`
      groups.get(k)!.push(x)
      merged.add(k)
    }
    for (const [k, g] of groups) {
      g.sort(byKey)
      // one reading per key ((boot, seq, idx, ts): readings' primary key); the ledger makes a second impossible
      const unique = g.filter((x, i) => i === 0 || byKey(g[i - 1], x) !== 0)
      const month = monthStart(unique[0].ts.getTime())
      await tx.query(UPSERT, [unique[0].meterId, new Date(month), ...encodeBlock(unique, month)])
      out.blocks++
      if (merged.has(k)) out.merged++
    }
    out.readings += rows.length
  })
}

/**
 * Empties the row partitions (readings and rollup_hour) of months before cutoff that hold no
 * reading any more: TRUNCATE frees their files and indexes at once, where deleted rows would
 * leave them at full size. A reader holding a partition past the lock timeout defers it.
 */
async function truncateCompacted(db: Db, cutoff: Date, out: CompactionResult) {
  const partitioned = await db.query<{ p: boolean }>(
    `SELECT (SELECT relkind FROM pg_class WHERE oid = to_regclass('rollup_hour')) = 'p' AS p`,
  )
  const hourly = partitioned.rows[0]?.p === true
  for (const key of await listPartitions(db)) {
    if (Date.parse(monthRange(key)[1]) > cutoff.getTime()) continue
    // a month truncated before has no heap: no lock taken for it (an exclusive lock waits for
    // readers and makes the next ones queue behind it)
    const { rows: size } = await db.query<{ b: string }>(
      `SELECT pg_relation_size($1::regclass) + COALESCE(pg_relation_size(to_regclass($2)), 0) AS b`,
      [partitionName(key), hourly ? hourPartition(key) : partitionName(key)],
    )
    if (Number(size[0].b) === 0) continue
    try {
      const done = await db.transaction(async (tx) => {
        await tx.query(`SET LOCAL lock_timeout = '2s'`)
        await tx.query(`LOCK TABLE ${partitionName(key)} IN ACCESS EXCLUSIVE MODE`)
        const { rows } = await tx.query(`SELECT 1 FROM ${partitionName(key)} LIMIT 1`)
        if (rows.length) return false
        const hour = hourly ? `, ${hourPartition(key)}` : ""
        if (hour) {
          const { rows: r } = await tx.query(`SELECT to_regclass($1) AS r`, [hourPartition(key)])
          if (r[0].r === null) return false
        }
        await tx.query(`TRUNCATE ${partitionName(key)}${hour}`)
        return true
      })
      if (done) out.truncated.push(key)
    } catch (e) {
      if ((e as { code?: string }).code !== "55P03") throw e
      out.busy.push(key)
    }
  }
  // rows of the hourly rollup before the horizon that live in no month partition (the default one)
  if (hourly) await db.query(`DELETE FROM rollup_hour_default WHERE bucket < $1`, [cutoff])
  else await db.query(`DELETE FROM rollup_hour WHERE bucket < $1`, [cutoff])
}

/** The hourly rollup's partition of a month ("YYYYMM"). */
export const hourPartition = (key: string) => `rollup_hour_p${key}`

/**
 * Migration step: reading_blocks and the read path (blocks.ts), and rollup_hour partitioned by
 * month like readings (a default partition takes the months without one), so that compaction
 * frees a compacted month's hourly rows by TRUNCATE.
 */
export async function compactionStep(tx: Db) {
  for (const sql of [...BLOCKS_DDL, ...READ_PATH_DDL]) await tx.query(sql)
  await tx.query(`ALTER TABLE rollup_hour RENAME TO rollup_hour_unpartitioned`)
  await tx.query(
    `ALTER TABLE rollup_hour_unpartitioned RENAME CONSTRAINT rollup_hour_pkey TO rollup_hour_unpartitioned_pkey`,
  )
  await tx.query(
    `CREATE TABLE rollup_hour (LIKE rollup_hour_unpartitioned INCLUDING DEFAULTS) PARTITION BY RANGE (bucket)`,
  )
  await tx.query(`ALTER TABLE rollup_hour ADD PRIMARY KEY (meter_id, bucket)`)
  await tx.query(`CREATE TABLE rollup_hour_default PARTITION OF rollup_hour DEFAULT`)
  const { rows } = await tx.query<{ t: Date }>(
    `SELECT DISTINCT date_trunc('month', bucket, 'UTC') AS t FROM rollup_hour_unpartitioned`,
  )
  const keys = new Set([...(await listPartitions(tx)), ...rows.map((r) => monthKey(new Date(r.t)))])
  for (const key of keys) await ensurePartition(tx, key)
  await tx.query(`INSERT INTO rollup_hour SELECT * FROM rollup_hour_unpartitioned`)
  await tx.query(`DROP TABLE rollup_hour_unpartitioned`)
}
