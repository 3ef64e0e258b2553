// One SQL implementation of Store for every PostgreSQL-compatible engine. All statements are
// parameterised ($1...); identifiers never come from input.
import { createHash } from "node:crypto"
import { COLUMN_NAMES, READING_COLUMNS, toReading } from "./columns.js"
import { migrate } from "./migrations.js"
import { ensurePartition, isPartitioned, listPartitions, monthKey, monthRange, partitionName } from "./partitions.js"
import {
  aggregate,
  BATCH_KEYS,
  consumptionSelect,
  districtConsumptionSql,
  PREVIOUS,
  rebuildSql,
  ROLLUPS,
  settleDistrictsSql,
  upsertSql,
  type Rollup,
} from "./rollups.js"
import {
  DEAD_LETTER_HEAD_BYTES,
  type AlarmEvent,
  type AlarmQuery,
  type AlarmRow,
  type BirthInfo,
  type Bucket,
  type ConsumptionQuery,
  type ConsumptionRow,
  type DeadLetter,
  type LatestQuery,
  type MeterRow,
  type ReadingQuery,
  type ReadingRow,
  type Store,
  type DeadLetterQuery,
  type MeterSeal,
  type DeadLetterRetention,
  type FrameKey,
  type FrameOutcome,
  type IngestTx,
  type LedgerEntry,
  type AlarmAck,
  type AlarmKey,
  type MeterLocation,
  type FleetConsumptionRow,
  type FleetConsumptionQuery,
  type ReadingsMaintenance,
} from "./store.js"

/** BEGIN, fn, COMMIT on one connection; ROLLBACK when fn or the commit fails. */
export async function runTransaction<T>(tx: Db, fn: (tx: Db) => Promise<T>): Promise<T> {
  await tx.query("BEGIN")
  try {
    const result = await fn(tx)
    await tx.query("COMMIT")
    return result
  } catch (e) {
    await tx.query("ROLLBACK").catch(() => {})
    throw e
  }
}

/** SQLSTATE 54001 statement_too_complex: a read the planner costs above READ_MAX_COST, refused unrun. */
export class ReadCostError extends Error {
  readonly code = "54001"
  constructor(
    readonly cost: number,
    readonly limit: number,
  ) {
    super(
      `the data tier estimates this read at ${Math.round(cost).toLocaleString("en-US")}, over READ_MAX_COST ` +
        `${limit.toLocaleString("en-US")}: narrow the $filter (one Datastream, a phenomenonTime range), or leave out ` +
        `$count and $orderby over a large set`,
    )
  }
}

/** The planner's total cost of a statement (EXPLAIN, not run). */
async function planCost(db: Db, sql: string, params: unknown[]): Promise<number> {
  const { rows } = await db.query<{ "QUERY PLAN": unknown }>(`EXPLAIN (FORMAT JSON) ${sql}`, params)
  const raw = rows[0]["QUERY PLAN"]
  const plan = (typeof raw === "string" ? JSON.parse(raw) : raw) as { Plan: { "Total Cost": number } }[]
  return plan[0].Plan["Total Cost"]
}

/** The part of a PostgreSQL client both engines provide. */
export interface Db {
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<{ rows: T[] }>
  /** Runs fn in one transaction on one connection; commits when it resolves. */
  transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T>
  /**
   * COPY table (columns) FROM STDIN of rows in the text format (copyText): bulk rows at about
   * three times the rate of an INSERT of unnested arrays.
   */
  copyFrom(table: string, columns: readonly string[], text: string): Promise<void>
  close(): Promise<void>
  /**
   * Where the open API's reads go, apart from ingest (BRIDGE_DEFAULTS.reads): PostgreSQL, a pool of
   * its own under a statement timeout; PGlite, one read statement at a time under a time budget.
   * Absent: the same connection.
   */
  reads?: Db
}

/**
 * Bucket start of an interval reading (by its start ts). Fixed expressions chosen from the bucket
 * name, never built from input; the time zone is parameter $4. Quarter hours align to UTC quarter
 * hours, which are quarter hours in every time zone in use.
 */
const BUCKET_SQL: Record<Bucket, string> = {
  "15min": `date_bin('15 minutes', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00')`,
  hour: `date_trunc('hour', ts, $4::text)`,
  day: `date_trunc('day', ts, $4::text)`,
  month: `date_trunc('month', ts, $4::text)`,
}

/** Output bucket of a rollup row's start (column `col`); the time zone is $4, as in BUCKET_SQL. */
const rollupBucketSql = (b: Bucket, col: string) => BUCKET_SQL[b].replace(/\bts\b/, col)

const HOUR_MS = 3_600_000
const onEdge = (d: Date | undefined, ms: number) => d === undefined || d.getTime() % ms === 0

/** The rollup a query can read: daily for days and months in UTC on whole days, hourly on whole hours. */
const SETTLE_BATCH_DISTRICTS = settleDistrictsSql(BATCH_KEYS)
const DISTRICT_CONSUMPTION = districtConsumptionSql()

function rollupFor(q: ConsumptionQuery): Rollup | undefined {
  if (q.bucket === "15min") return undefined
  const [hour, day] = ROLLUPS
  if (q.bucket !== "hour" && (q.tz ?? "UTC") === "UTC" && onEdge(q.from, day.ms) && onEdge(q.to, day.ms)) return day
  if (onEdge(q.from, HOUR_MS) && onEdge(q.to, HOUR_MS)) return hour
  return undefined
}

/** SQL true when a rollup row's whole span falls in one output bucket. */
const aligned = (r: Rollup, b: Bucket) =>
  `${rollupBucketSql(b, "bucket")} = ${rollupBucketSql(b, `(bucket + interval '1 ${r.unit}' - interval '1 microsecond')`)}`

function toConsumption(r: Record<string, unknown>): ConsumptionRow {
  return {
    start: new Date(r.start as Date),
    waterMl: n(r.water),
    energyWh: n(r.energy),
    reverseMl: n(r.reverse_ml),
    readings: Number(r.readings),
    gap: !!r.gap,
  }
}

const bytes = (b: Uint8Array | null | undefined) => (b ? Buffer.from(b) : null)

/** Text from the network made safe for a text column: no NUL or other control characters, bounded. */
const printable = (s: string, max: number) =>
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  s.slice(0, max).replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`)

const n = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v))

function toMeter(r: Record<string, unknown>): MeterRow {
  return {
    meterId: r.meter_id as string,
    online: r.online as boolean,
    firstSeen: new Date(r.first_seen as Date),
    lastSeen: new Date(r.last_seen as Date),
    firmware: (r.firmware as string) ?? null,
    board: (r.board as string) ?? null,
    boot: n(r.boot),
    intervalS: n(r.interval_s),
    batch: n(r.batch),
    uptimeEpochMs: n(r.uptime_epoch_ms),
    inactive: !!r.inactive,
    birthSeq: n(r.birth_seq),
    bornAt: r.born_at ? new Date(r.born_at as Date) : null,
    birthLink: n(r.birth_link),
    channels: (r.channels as string[] | null) ?? [],
    alarmRules: (r.alarm_rules as string[] | null) ?? [],
    queued: n(r.queued),
    dropped: n(r.dropped),
    unstored: n(r.unstored),
    location:
      r.lat === null || r.lat === undefined
        ? null
        : {
            lat: Number(r.lat),
            lon: Number(r.lon),
            address: (r.address as string) ?? null,
            district: (r.district as string) ?? null,
          },
    seal: {
      policy: r.seal_policy === "sealed" ? "sealed" : "open",
      key: r.seal_key ? new Uint8Array(r.seal_key as Uint8Array) : null,
      nextKey: r.seal_key_next ? new Uint8Array(r.seal_key_next as Uint8Array) : null,
    },
  }
}

function toAlarm(r: Record<string, unknown>): AlarmRow {
  return {
    meterId: r.meter_id as string,
    boot: Number(r.boot),
    seq: Number(r.seq),
    type: r.type as string,
    active: r.active as boolean,
    ts: new Date(r.ts as Date),
    value: Number(r.value),
    source: r.source as AlarmRow["source"],
    ...(r.acked_by
      ? { ack: { by: r.acked_by as string, at: new Date(r.acked_at as Date), note: r.note as string } }
      : {}),
  }
}

/** Parameters of a bulk statement: one typed array per column, unnested in SQL (any number of rows, few parameters). */
const unnest = (types: string[], from = 1) => `unnest(${types.map((t, i) => `$${i + from}::${t}[]`).join(", ")})`

const READING_ARRAY_TYPES = READING_COLUMNS.map((c) => c.sql)

/** The rows' values as one array per column (COLUMN_NAMES order); times as ISO 8601. */
function readingColumns(rows: ReadingRow[]): unknown[][] {
  return READING_COLUMNS.map((c) =>
    c.sql === "timestamptz" ? rows.map((r) => (r[c.key] as Date).toISOString()) : rows.map((r) => r[c.key]),
  )
}

/** A value in COPY's text format: \\N for NULL, t/f, ISO 8601 times; backslash and separators escaped. */
function copyValue(v: unknown): string {
  if (v === null || v === undefined) return "\\N"
  if (typeof v === "number") return String(v)
  if (typeof v === "boolean") return v ? "t" : "f"
  if (v instanceof Date) return v.toISOString()
  const t = String(v)
  return COPY_SPECIAL.test(t) ? t.replace(COPY_SPECIALS, (c) => COPY_ESCAPE[c]) : t
}
const COPY_SPECIAL = /[\\\t\n\r]/
const COPY_SPECIALS = /[\\\t\n\r]/g
const COPY_ESCAPE: Record<string, string> = { "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r" }
const READING_KEYS = READING_COLUMNS.map((c) => c.key)

/** Rows for Db.copyFrom, one line each, values in COLUMN_NAMES order. */
function copyText(rows: ReadingRow[]): string {
  let out = ""
  for (const r of rows) {
    out += copyValue(r[READING_KEYS[0]])
    for (let i = 1; i < READING_KEYS.length; i++) out += "\t" + copyValue(r[READING_KEYS[i]])
    out += "\n"
  }
  return out
}

/** One row per meter (ON CONFLICT DO UPDATE may touch a row once per statement). */
const LATEST_UPSERT = `INSERT INTO meter_latest (${COLUMN_NAMES.join(", ")})
  SELECT * FROM ${unnest(READING_ARRAY_TYPES)}
  ON CONFLICT (meter_id) DO UPDATE SET ${COLUMN_NAMES.slice(1)
    .map((c) => `${c} = EXCLUDED.${c}`)
    .join(", ")}
  WHERE (meter_latest.ts, meter_latest.boot, meter_latest.seq, meter_latest.idx)
      < (EXCLUDED.ts, EXCLUDED.boot, EXCLUDED.seq, EXCLUDED.idx)`

/** a is newer than b in meter_latest's order: (ts, boot, seq, idx). */
const newer = (a: ReadingRow, b: ReadingRow) =>
  a.ts.getTime() - b.ts.getTime() || a.boot - b.boot || a.seq - b.seq || a.idx - b.idx

const frameKey = (f: FrameKey) => `${f.meterId}\u0000${f.boot}\u0000${f.seq}`

/** What the ledger holds for a frame id answers a claim of it (the rule on FrameOutcome). */
const against = (ledgerSha256: string | null, sha256: string | undefined): FrameOutcome =>
  ledgerSha256 && sha256 && ledgerSha256 !== sha256
    ? { kind: "conflict", storedSha256: ledgerSha256 }
    : { kind: "duplicate" }

/**
 * The data tier's writes on one connection or transaction: SqlStore's single-frame methods and
 * an ingest batch (IngestTx) run the same statements.
 */
/** What SqlWrites needs of its store: whether readings is partitioned, and the months known to have a partition. */
interface PartitionState {
  partitioned: boolean
  months: Set<string>
}

class SqlWrites implements IngestTx {
  constructor(
    private readonly db: Db,
    private readonly parts: PartitionState,
  ) {}

  async getMeters(meterIds: string[]) {
    const out = new Map<string, MeterRow>()
    if (!meterIds.length) return out
    const { rows } = await this.db.query(`SELECT * FROM meters WHERE meter_id = ANY($1::text[])`, [meterIds])
    for (const r of rows) out.set(r.meter_id as string, toMeter(r))
    return out
  }

  async touchMeters(touches: { meterId: string; firstAt: Date; lastAt: Date }[]) {
    if (!touches.length) return
    // sorted, one row per meter: concurrent batches lock meters in the same order
    const t = [...touches].sort((a, b) => (a.meterId < b.meterId ? -1 : a.meterId > b.meterId ? 1 : 0))
    await this.db.query(
      `INSERT INTO meters (meter_id, first_seen, last_seen) SELECT * FROM ${unnest(["text", "timestamptz", "timestamptz"])}
       ON CONFLICT (meter_id) DO UPDATE SET last_seen = GREATEST(meters.last_seen, EXCLUDED.last_seen)`,
      [t.map((x) => x.meterId), t.map((x) => x.firstAt.toISOString()), t.map((x) => x.lastAt.toISOString())],
    )
  }

  async recordBirth(meterId: string, b: BirthInfo, at: Date) {
    await this.db.query(
      `INSERT INTO meters (meter_id, online, first_seen, last_seen, firmware, board, boot, interval_s, batch,
         uptime_epoch_ms, birth_seq, born_at, birth_link, channels, alarm_rules, queued, dropped,
         unstored)
       VALUES ($1, true, $2, $2, $3, $4, $5, $6, $7, $8, $9, $2, $10, $11::text[], $12::text[], $13, $14, $15)
       ON CONFLICT (meter_id) DO UPDATE SET online = true, last_seen = GREATEST(meters.last_seen, EXCLUDED.last_seen),
         firmware = EXCLUDED.firmware, board = EXCLUDED.board, boot = EXCLUDED.boot,
         interval_s = EXCLUDED.interval_s, batch = EXCLUDED.batch, uptime_epoch_ms = EXCLUDED.uptime_epoch_ms,
         birth_seq = EXCLUDED.birth_seq, born_at = EXCLUDED.born_at, birth_link = EXCLUDED.birth_link,
         channels = EXCLUDED.channels, alarm_rules = EXCLUDED.alarm_rules,
         queued = EXCLUDED.queued, dropped = EXCLUDED.dropped, unstored = EXCLUDED.unstored`,
      [
        meterId,
        at,
        b.firmware,
        b.board,
        b.boot,
        b.intervalS,
        b.batch,
        b.uptimeEpochMs,
        b.seq,
        b.link ?? null,
        b.channels ?? [],
        b.alarmRules ?? [],
        b.queued ?? null,
        b.dropped ?? null,
        b.unstored ?? null,
      ],
    )
  }

  async recordDeath(meterId: string, boot: number, _at: Date) {
    const { rows } = await this.db.query(
      `UPDATE meters SET online = false WHERE meter_id = $1 AND (boot IS NULL OR boot <= $2) RETURNING meter_id`,
      [meterId, boot],
    )
    return rows.length === 1
  }

  async markActive(meterId: string, at: Date) {
    const { rows } = await this.db.query(
      `WITH back AS (
         UPDATE meters SET inactive = false, online = true, last_seen = GREATEST(last_seen, $2)
         WHERE meter_id = $1 AND inactive RETURNING meter_id)
       INSERT INTO bridge_alarms (meter_id, type, active, ts, value)
       SELECT meter_id, 'INACTIVE', false, $2, 0 FROM back RETURNING meter_id`,
      [meterId, at],
    )
    return rows.length === 1
  }

  async setSeal(meterId: string, seal: Partial<MeterSeal>) {
    // a field left out is left unchanged ($n IS NULL AND NOT $m: not given)
    const { rows } = await this.db.query(
      `UPDATE meters SET
         seal_policy = COALESCE($2, seal_policy),
         seal_key = CASE WHEN $4 THEN $3::bytea ELSE seal_key END,
         seal_key_next = CASE WHEN $6 THEN $5::bytea ELSE seal_key_next END
       WHERE meter_id = $1 RETURNING meter_id`,
      [meterId, seal.policy ?? null, bytes(seal.key), "key" in seal, bytes(seal.nextKey), "nextKey" in seal],
    )
    return rows.length === 1
  }

  /**
   * One INSERT … ON CONFLICT DO NOTHING claims every new frame id; a second statement reads the
   * content hashes of the ids claimed before (in a statement of its own, so it sees ids another
   * bridge committed meanwhile), which tell a redelivery (same bytes, or a ledger row from before
   * hashes were kept) from a conflict.
   */
  async claimFrames(frames: LedgerEntry[]): Promise<FrameOutcome[]> {
    const first = new Map<string, LedgerEntry>()
    for (const f of frames) if (!first.has(frameKey(f))) first.set(frameKey(f), f)
    const distinct = [...first.values()].sort((a, b) =>
      a.meterId < b.meterId ? -1 : a.meterId > b.meterId ? 1 : a.boot - b.boot || a.seq - b.seq,
    )
    const claimed = new Set<string>()
    const ledger = new Map<string, string | null>()
    if (distinct.length) {
      const { rows } = await this.db.query<{ meter_id: string; boot: number; seq: number }>(
        `INSERT INTO frames (meter_id, boot, seq, kind, received_at, sha256)
         SELECT * FROM ${unnest(["text", "bigint", "bigint", "text", "timestamptz", "text"])}
         ON CONFLICT DO NOTHING RETURNING meter_id, boot, seq`,
        [
          distinct.map((f) => f.meterId),
          distinct.map((f) => f.boot),
          distinct.map((f) => f.seq),
          distinct.map((f) => f.kind),
          distinct.map((f) => f.at.toISOString()),
          distinct.map((f) => f.sha256 ?? null),
        ],
      )
      for (const r of rows) claimed.add(frameKey({ meterId: r.meter_id, boot: Number(r.boot), seq: Number(r.seq) }))
      const before = distinct.filter((f) => !claimed.has(frameKey(f)))
      if (before.length) {
        const stored = await this.db.query<{ meter_id: string; boot: number; seq: number; sha256: string | null }>(
          `SELECT f.meter_id, f.boot, f.seq, f.sha256 FROM frames f
           JOIN ${unnest(["text", "bigint", "bigint"])} AS k(meter_id, boot, seq) USING (meter_id, boot, seq)`,
          [before.map((f) => f.meterId), before.map((f) => f.boot), before.map((f) => f.seq)],
        )
        for (const r of stored.rows)
          ledger.set(frameKey({ meterId: r.meter_id, boot: Number(r.boot), seq: Number(r.seq) }), r.sha256 ?? null)
      }
    }
    // the outcome of each entry in order, as if claimed one at a time
    const seen = new Set<string>()
    return frames.map((f): FrameOutcome => {
      const k = frameKey(f)
      if (!seen.has(k)) {
        seen.add(k)
        if (claimed.has(k)) {
          ledger.set(k, f.sha256 ?? null)
          return { kind: "stored" }
        }
      }
      return against(ledger.get(k) ?? null, f.sha256)
    })
  }

  async writeReadings(rows: ReadingRow[]) {
    if (!rows.length) return
    // COPY has no ON CONFLICT: the ledger claimed these frames, so their rows are new. Rows of a
    // claimed frame already present would mean a broken data tier: the key refuses them (23505),
    // and the batch is split until that frame is parked.
    if (this.parts.partitioned) {
      // a late backfill into any month finds its partition (made here, in this transaction, if new)
      const months = new Set(rows.map((r) => monthKey(r.ts)))
      for (const m of [...months].sort())
        if (!this.parts.months.has(m)) {
          await ensurePartition(this.db, m)
          this.parts.months.add(m)
        }
    }
    await this.db.copyFrom("readings", COLUMN_NAMES, copyText(rows))
    // the consumption rollups follow in the same transaction (store/rollups.ts)
    let days: unknown[][] = []
    for (const r of ROLLUPS) {
      const params = aggregate(r, rows)
      if (r.unit === "day") days = params
      const stale = await this.db.query<{ meter_id: string; bucket: Date }>(upsertSql(r), params)
      if (stale.rows.length)
        await this.db.query(rebuildSql(r), [
          stale.rows.map((s) => s.meter_id),
          stale.rows.map((s) => new Date(s.bucket).toISOString()),
        ])
    }
    // then the districts' days those rows changed (rollups.ts): params (meter ids, day starts)
    await this.db.query(SETTLE_BATCH_DISTRICTS, [days[0], days[1]])
    const newest = new Map<string, ReadingRow>()
    for (const r of rows) {
      const n = newest.get(r.meterId)
      if (!n || newer(r, n) > 0) newest.set(r.meterId, r)
    }
    const latest = [...newest.values()].sort((a, b) => (a.meterId < b.meterId ? -1 : a.meterId > b.meterId ? 1 : 0))
    await this.db.query(LATEST_UPSERT, readingColumns(latest))
  }

  async writeAlarms(events: AlarmEvent[]) {
    if (!events.length) return
    await this.db.query(
      `INSERT INTO alarms (meter_id, boot, seq, type, active, ts, value)
       SELECT * FROM ${unnest(["text", "bigint", "bigint", "text", "boolean", "timestamptz", "bigint"])}`,
      [
        events.map((e) => e.meterId),
        events.map((e) => e.boot),
        events.map((e) => e.seq),
        events.map((e) => e.type),
        events.map((e) => e.active),
        events.map((e) => e.ts.toISOString()),
        events.map((e) => e.value),
      ],
    )
  }

  async raiseBridgeAlarm(meterId: string, type: string, value: number, at: Date) {
    // one raise per open alarm: serialised per meter by locking its row
    await this.db.query(`SELECT 1 FROM meters WHERE meter_id = $1 FOR UPDATE`, [meterId])
    const { rows } = await this.db.query(
      `INSERT INTO bridge_alarms (meter_id, type, active, ts, value)
       SELECT $1, $2, true, $3, $4
       WHERE NOT COALESCE((SELECT active FROM bridge_alarms WHERE meter_id = $1 AND type = $2
                           ORDER BY ts DESC, id DESC LIMIT 1), false)
       RETURNING id`,
      [meterId, type, at, value],
    )
    return rows.length === 1
  }

  async addDeadLetters(letters: { letter: DeadLetter; at: Date }[]) {
    if (!letters.length) return
    const payloads = letters.map(({ letter }) =>
      Buffer.from(letter.payload.buffer, letter.payload.byteOffset, letter.payload.byteLength),
    )
    await this.db.query(
      `INSERT INTO dead_letters (received_at, topic, meter_id, reason, detail, payload, payload_bytes, payload_sha256,
         stored_sha256)
       SELECT received_at, topic, meter_id, reason, detail, decode(head, 'hex'), bytes, sha256, stored_sha256
       FROM ${unnest(["timestamptz", "text", "text", "text", "text", "text", "integer", "text", "text"])}
         AS d(received_at, topic, meter_id, reason, detail, head, bytes, sha256, stored_sha256)`,
      [
        letters.map(({ at }) => at.toISOString()),
        letters.map(({ letter }) => printable(letter.topic, 512)),
        letters.map(({ letter }) => letter.meterId),
        letters.map(({ letter }) => printable(letter.reason, 64)),
        letters.map(({ letter }) => printable(letter.detail, 1024)),
        payloads.map((p) => p.subarray(0, DEAD_LETTER_HEAD_BYTES).toString("hex")),
        payloads.map((p) => p.length),
        payloads.map((p) => createHash("sha256").update(p).digest("hex")),
        letters.map(({ letter }) => letter.storedSha256 ?? null),
      ],
    )
  }
}

export class SqlStore implements Store {
  readonly features = { hypertable: false, partitioned: false }
  /** Months known to have a partition; forgotten after any failed batch (its partitions rolled back). */
  private readonly parts: PartitionState = { partitioned: false, months: new Set() }

  constructor(
    readonly engine: string,
    /** The engine's connection; public for tools (benchmarks seed with it), not for the API. */
    readonly db: Db,
  ) {
    this.writes = new SqlWrites(db, this.parts)
  }

  /** Single statements outside a batch: the same SQL as a batch's. */
  private readonly writes: SqlWrites

  /**
   * READ_MAX_COST: a SensorThings statement the planner costs above this is refused before it
   * runs (0: no limit). PGlite cannot stop a statement without reopening the database, so a full
   * scan it can foresee is better refused than stopped.
   */
  readMaxCost = 0

  /** The open API's reads: apart from ingest, under their budget (Db.reads). */
  private get reader(): Db {
    return this.db.reads ?? this.db
  }

  /** Runs the schema steps not applied yet (store/migrations.ts); returns their versions. */
  async migrate() {
    const applied = await migrate(this.db, this.engine)
    this.features.hypertable = await this.db
      .query(
        `SELECT 1 FROM timescaledb_information.hypertables
         WHERE hypertable_name = 'readings' AND hypertable_schema = current_schema()`,
      )
      .then((r) => r.rows.length > 0)
      .catch(() => false)
    this.features.partitioned = this.parts.partitioned = await isPartitioned(this.db)
    await this.maintainReadings(new Date())
    return applied
  }

  /**
   * Makes the partitions of readings for every month in [from, to) (for tools that write readings
   * with their own SQL, as benchmarks' seeds do; ingest makes its own).
   */
  async ensurePartitions(from: Date, to: Date) {
    if (!this.parts.partitioned) return
    await this.db.transaction(async (tx) => {
      const d = new Date(Date.UTC(from.getUTCFullYear(), from.getUTCMonth(), 1))
      for (; d < to; d.setUTCMonth(d.getUTCMonth() + 1)) await ensurePartition(tx, monthKey(d))
    })
  }

  /**
   * Partitions for this month and the next two made ahead; with retentionDays, the partitions
   * (TimescaleDB chunks; rows of a plain table) wholly older than that dropped. Rollups are kept.
   */
  async maintainReadings(now: Date, retentionDays?: number): Promise<ReadingsMaintenance> {
    const out: ReadingsMaintenance = { created: [], dropped: [], deletedRows: 0 }
    const cutoff = retentionDays === undefined ? undefined : new Date(now.getTime() - retentionDays * 86_400_000)
    if (this.parts.partitioned) {
      const have = new Set(await listPartitions(this.db))
      for (let i = 0; i < 3; i++) {
        const key = monthKey(new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + i, 1)))
        if (have.has(key)) continue
        await this.db.transaction((tx) => ensurePartition(tx, key))
        out.created.push(key)
      }
      if (cutoff)
        for (const key of have)
          if (Date.parse(monthRange(key)[1]) <= cutoff.getTime()) {
            // DROP TABLE of a partition locks readings briefly (ACCESS EXCLUSIVE): one statement per month
            await this.db.query(`DROP TABLE IF EXISTS ${partitionName(key)}`)
            this.parts.months.delete(key)
            out.dropped.push(key)
          }
    } else if (cutoff && this.features.hypertable) {
      const { rows } = await this.db.query<{ c: string }>(
        `SELECT drop_chunks('readings', older_than => $1::timestamptz)::text AS c`,
        [cutoff],
      )
      out.dropped.push(...rows.map((r) => r.c))
    } else if (cutoff) {
      const { rows } = await this.db.query<{ n: number }>(
        `WITH gone AS (DELETE FROM readings WHERE ts < $1 RETURNING 1) SELECT count(*) AS n FROM gone`,
        [cutoff],
      )
      out.deletedRows = Number(rows[0].n)
    }
    return out
  }

  async touchMeter(meterId: string, at: Date): Promise<MeterRow> {
    const { rows } = await this.db.query(
      `INSERT INTO meters (meter_id, first_seen, last_seen) VALUES ($1, $2, $2)
       ON CONFLICT (meter_id) DO UPDATE SET last_seen = GREATEST(meters.last_seen, EXCLUDED.last_seen)
       RETURNING *`,
      [meterId, at],
    )
    return toMeter(rows[0])
  }

  async getMeter(meterId: string) {
    const { rows } = await this.db.query(`SELECT * FROM meters WHERE meter_id = $1`, [meterId])
    return rows[0] ? toMeter(rows[0]) : undefined
  }

  async meterIds() {
    const { rows } = await this.reader.query<{ meter_id: string }>(`SELECT meter_id FROM meters ORDER BY meter_id`)
    return rows.map((r) => r.meter_id)
  }

  async firstSeen() {
    const { rows } = await this.reader.query<{ t: Date | null }>(`SELECT min(first_seen) AS t FROM meters`)
    return rows[0]?.t ? new Date(rows[0].t) : null
  }

  async listMeters() {
    const { rows } = await this.reader.query(`SELECT * FROM meters ORDER BY meter_id`)
    return rows.map(toMeter)
  }

  async recordBirth(meterId: string, b: BirthInfo, at: Date) {
    await this.writes.recordBirth(meterId, b, at)
  }

  async recordDeath(meterId: string, boot: number, at: Date) {
    return this.writes.recordDeath(meterId, boot, at)
  }

  async registerMeter(meterId: string, at: Date, seal: Partial<MeterSeal> = {}) {
    const { rows } = await this.db.query(
      `INSERT INTO meters (meter_id, first_seen, last_seen, seal_policy, seal_key, seal_key_next)
       VALUES ($1, $2, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING meter_id`,
      [meterId, at, seal.policy ?? "open", bytes(seal.key), bytes(seal.nextKey)],
    )
    return rows.length === 1
  }

  async setSeal(meterId: string, seal: Partial<MeterSeal>) {
    return this.writes.setSeal(meterId, seal)
  }

  async insertReadings(f: FrameKey, rows: ReadingRow[], at: Date): Promise<FrameOutcome> {
    return this.ingestBatch(async (tx) => {
      const [claim] = await tx.claimFrames([{ ...f, kind: "readings", at }])
      if (claim.kind === "stored") await tx.writeReadings(rows)
      return claim
    })
  }

  async insertAlarm(e: AlarmEvent, at: Date, sha256?: string): Promise<FrameOutcome> {
    return this.ingestBatch(async (tx) => {
      const [claim] = await tx.claimFrames([
        { meterId: e.meterId, boot: e.boot, seq: e.seq, sha256, kind: "alarm", at },
      ])
      if (claim.kind === "stored") await tx.writeAlarms([e])
      return claim
    })
  }

  async ingestBatch<T>(fn: (tx: IngestTx) => Promise<T>): Promise<T> {
    try {
      return await this.db.transaction((tx) => fn(new SqlWrites(tx, this.parts)))
    } catch (e) {
      // partitions made in a rolled-back batch are gone again (and one may have been dropped elsewhere)
      this.parts.months.clear()
      throw e
    }
  }

  async raiseBridgeAlarm(meterId: string, type: string, value: number, at: Date) {
    return this.ingestBatch((tx) => tx.raiseBridgeAlarm(meterId, type, value, at))
  }

  async readings(meterId: string, q: ReadingQuery = {}) {
    const { rows } = await this.reader.query(
      `SELECT * FROM readings WHERE meter_id = $1
         AND ($2::timestamptz IS NULL OR ts >= $2) AND ($3::timestamptz IS NULL OR ts < $3)
       ORDER BY ts, boot, seq, idx LIMIT $4`,
      [meterId, q.from ?? null, q.to ?? null, q.limit ?? 10000],
    )
    return rows.map(toReading)
  }

  async latest(q: LatestQuery = {}) {
    const { rows } = await this.reader.query(
      `SELECT * FROM meter_latest WHERE ($1::text IS NULL OR meter_id > $1) ORDER BY meter_id LIMIT $2`,
      [q.after ?? null, q.limit ?? 1_000_000],
    )
    return rows.map(toReading)
  }

  async latestOf(meterIds: string[]) {
    if (!meterIds.length) return []
    const { rows } = await this.reader.query(
      `SELECT * FROM meter_latest WHERE meter_id = ANY($1::text[]) ORDER BY meter_id`,
      [meterIds],
    )
    return rows.map(toReading)
  }

  async latestJson(q: LatestQuery = {}) {
    const camel = (c: string) => c.replace(/_([a-z])/g, (_, x: string) => x.toUpperCase())
    const columns = COLUMN_NAMES.map((c) =>
      c === "ts" ? `to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS ts` : `${c} AS "${camel(c)}"`,
    )
    // json_agg over an aliased row is faster than json_build_object per row
    const { rows } = await this.reader.query<{ json: string | null; count: number; last: string | null }>(
      `SELECT json_agg(l ORDER BY "meterId")::text AS json, count(*) AS count, max("meterId") AS last
       FROM (SELECT ${columns.join(", ")} FROM meter_latest
             WHERE ($1::text IS NULL OR meter_id > $1) ORDER BY meter_id LIMIT $2) l`,
      [q.after ?? null, q.limit ?? 1_000_000],
    )
    const r = rows[0]
    return { json: r.json ?? "[]", count: Number(r.count), last: r.last }
  }

  /**
   * Consumption per bucket. By hour, day or month from the rollups (never readings) when from and
   * to lie on whole hours (whole UTC days for the daily rollup) and the time zone's offsets are
   * whole hours; otherwise, and by 15 minutes, from readings.
   */
  async consumption(meterId: string, q: ConsumptionQuery): Promise<ConsumptionRow[]> {
    const r = rollupFor(q)
    if (r) {
      const rows = await this.consumptionFromRollup(r, meterId, q)
      if (rows) return rows
    }
    return this.consumptionFromReadings(meterId, q)
  }

  /**
   * Consumption per bucket from a rollup; undefined when a row's hour straddles an output bucket
   * (a time zone with a sub-hour offset). Each row's first reading is charged against the previous
   * row's last total, from the last row before `from` on.
   */
  private async consumptionFromRollup(r: Rollup, meterId: string, q: ConsumptionQuery) {
    const out = rollupBucketSql(q.bucket, "bucket")
    const { rows } = await this.reader.query(
      `WITH r AS (
         SELECT *, ${PREVIOUS} FROM ${r.table}
         WHERE meter_id = $1 AND ($3::timestamptz IS NULL OR bucket < $3)
           AND bucket >= COALESCE(
             (SELECT max(bucket) FROM ${r.table} WHERE meter_id = $1 AND bucket < $2::timestamptz), $2, '-infinity')
         WINDOW w AS (ORDER BY bucket))
       ${consumptionSelect(out)}, bool_and(${aligned(r, q.bucket)}) AS aligned
       FROM r WHERE $2::timestamptz IS NULL OR bucket >= $2
       GROUP BY 1 ORDER BY 1`,
      [meterId, q.from ?? null, q.to ?? null, q.tz ?? "UTC"],
    )
    if (rows.some((x) => !x.aligned)) return undefined
    return rows.map(toConsumption)
  }

  /**
   * The fleet's consumption per bucket (hour, day, month) from the rollups: every meter's, summed.
   * Undefined when the range or time zone does not fit the rollups (see consumption).
   * Per district: the same over rollup_day joined to meters on meter_id, grouped by its district.
   */
  async fleetConsumption(q: FleetConsumptionQuery): Promise<FleetConsumptionRow[] | undefined> {
    const r = rollupFor(q)
    // by UTC day: one row per district and day (rollup_district_day), whatever the fleet's size
    if (r?.unit === "day" && q.bucket === "day") {
      const { rows } = await this.reader.query(DISTRICT_CONSUMPTION, [q.from ?? null, q.to ?? null, q.district ?? null])
      return rows.map((x) => ({ ...toConsumption(x), meters: Number(x.meters) }))
    }
    if (!r || q.district !== undefined) return undefined
    return this.fleetConsumptionByMeter(q, r)
  }

  /**
   * The fleet's consumption per bucket from every meter's rollup rows (a row per meter and hour
   * or day in the range). Public for tests and benchmarks, which compare the district days to it.
   */
  async fleetConsumptionByMeter(q: ConsumptionQuery, r = rollupFor(q)): Promise<FleetConsumptionRow[] | undefined> {
    if (!r) return undefined
    const out = rollupBucketSql(q.bucket, "bucket")
    // each meter's last row before `from` (an index probe per meter), so its first row has a predecessor
    const { rows } = await this.reader.query(
      `WITH r AS (
         SELECT *, ${PREVIOUS} FROM (
           SELECT * FROM ${r.table}
           WHERE ($1::timestamptz IS NULL OR bucket >= $1) AND ($2::timestamptz IS NULL OR bucket < $2)
           UNION ALL
           SELECT p.* FROM meters m CROSS JOIN LATERAL (
             SELECT * FROM ${r.table} t WHERE t.meter_id = m.meter_id AND t.bucket < $1::timestamptz
             ORDER BY t.bucket DESC LIMIT 1) p
           WHERE $1::timestamptz IS NOT NULL) x
         WINDOW w AS (PARTITION BY meter_id ORDER BY bucket))
       ${consumptionSelect(out.replace(/\$4/g, () => "$3"))}, bool_and(${aligned(r, q.bucket).replace(/\$4/g, () => "$3")}) AS aligned
       FROM r WHERE $1::timestamptz IS NULL OR bucket >= $1
       GROUP BY 1 ORDER BY 1`,
      [q.from ?? null, q.to ?? null, q.tz ?? "UTC"],
    )
    if (rows.some((x) => !x.aligned)) return undefined
    return rows.map((x) => ({ ...toConsumption(x), meters: Number(x.meters) }))
  }

  /**
   * Consumption per bucket from readings (the rule is on ConsumptionRow): LAG over the meter's
   * readings in time order, starting from the last reading before `from` so the first bucket's
   * difference has its predecessor. Public for tests and benchmarks, which compare the rollups to it.
   */
  async consumptionFromReadings(meterId: string, q: ConsumptionQuery): Promise<ConsumptionRow[]> {
    const bucket = BUCKET_SQL[q.bucket]
    if (!bucket) throw new Error(`unknown bucket ${q.bucket}`)
    const { rows } = await this.reader.query(
      `WITH r AS (
         SELECT ts, interval_s, volume_ml, water_total_ml, energy_wh, energy_total_wh,
           reverse_ml, LAG(water_total_ml) OVER w AS prev_water, LAG(energy_total_wh) OVER w AS prev_energy,
           LAG(ts + make_interval(secs => interval_s)) OVER w AS prev_end
         FROM readings
         WHERE meter_id = $1 AND ($3::timestamptz IS NULL OR ts < $3)
           AND ts >= COALESCE(
             (SELECT max(ts) FROM readings WHERE meter_id = $1 AND ts < $2::timestamptz), $2, '-infinity')
         WINDOW w AS (ORDER BY ts, boot, seq, idx))
       SELECT ${bucket} AS start,
         sum(CASE WHEN water_total_ml >= prev_water THEN water_total_ml - prev_water ELSE volume_ml END) AS water_ml,
         sum(CASE WHEN energy_total_wh >= prev_energy THEN energy_total_wh - prev_energy ELSE energy_wh END) AS energy_wh,
         sum(reverse_ml) AS reverse_ml, count(*) AS readings,
         bool_or(ts > prev_end) AS gap
       FROM r WHERE $2::timestamptz IS NULL OR ts >= $2
       GROUP BY 1 ORDER BY 1`,
      // $4 (time zone) only where the bucket expression uses it: PostgreSQL rejects untyped extras.
      [meterId, q.from ?? null, q.to ?? null, q.tz ?? "UTC"].slice(0, q.bucket === "15min" ? 3 : 4),
    )
    return rows.map((r) => toConsumption({ ...r, water: r.water_ml, energy: r.energy_wh }))
  }

  async alarms(q: AlarmQuery = {}) {
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
    const { rows } = await this.reader.query(
      `SELECT e.*, k.acked_by, k.acked_at, k.note FROM (${edges}) e
       LEFT JOIN alarm_acks k USING (meter_id, boot, seq) ORDER BY e.ts, e.meter_id, e.boot, e.seq`,
      params,
    )
    return rows.map(toAlarm)
  }

  async checkInactivity(now: Date, slackS: number) {
    const { rows } = await this.db.query<{ meter_id: string }>(
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

  async markActive(meterId: string, at: Date) {
    return this.writes.markActive(meterId, at)
  }

  async countOnline() {
    const { rows } = await this.db.query(`SELECT count(*) AS n FROM meters WHERE online`)
    return Number(rows[0].n)
  }

  async addDeadLetter(d: DeadLetter, at: Date) {
    await this.writes.addDeadLetters([{ letter: d, at }])
  }

  async deadLetters(q: DeadLetterQuery = {}) {
    const { rows } = await this.reader.query(
      `SELECT * FROM dead_letters WHERE ($1::bigint IS NULL OR id < $1) ORDER BY id DESC LIMIT $2`,
      [q.beforeId ?? null, q.limit ?? 100],
    )
    return rows.map((r) => ({
      id: Number(r.id),
      receivedAt: new Date(r.received_at as Date),
      topic: r.topic as string,
      meterId: (r.meter_id as string) ?? null,
      reason: r.reason as string,
      detail: r.detail as string,
      payloadHead: new Uint8Array(r.payload as Uint8Array),
      payloadBytes: Number(r.payload_bytes),
      payloadSha256: r.payload_sha256 as string,
      storedSha256: (r.stored_sha256 as string) ?? null,
    }))
  }

  async pruneDeadLetters(r: DeadLetterRetention, now: Date) {
    const { rows } = await this.db.query<{ n: number }>(
      `WITH gone AS (
         DELETE FROM dead_letters WHERE received_at < $1::timestamptz - make_interval(secs => $2::double precision)
            OR id <= (SELECT id FROM dead_letters ORDER BY id DESC OFFSET $3 LIMIT 1)
         RETURNING 1)
       SELECT count(*) AS n FROM gone`,
      [now, r.maxAgeS, r.maxRows],
    )
    const deleted = Number(rows[0].n)
    // PGlite runs no autovacuum: without this, deleted rows' space is never reused
    if (deleted > 0) await this.db.query(`VACUUM dead_letters`)
    // nor a checkpointer: its WAL grew to 64 MB per 100k frames until a checkpoint recycles it
    // (measured with npm run fuzz); this job runs every minute
    if (this.engine === "pglite") await this.db.query(`CHECKPOINT`)
    return deleted
  }

  async setLocation(meterId: string, l: MeterLocation | null) {
    const { rows } = await this.db.query(
      `UPDATE meters SET lat = $2, lon = $3, address = $4, district = $5 WHERE meter_id = $1 RETURNING 1`,
      [meterId, l?.lat ?? null, l?.lon ?? null, l?.address ?? null, l?.district ?? null],
    )
    return rows.length > 0
  }

  async ackAlarm(key: AlarmKey, ack: AlarmAck) {
    const params = [key.meterId, key.boot, key.seq]
    // the edge must exist (a meter's alarm frame, or a bridge alarm with boot 0 and seq = its id)
    const added = await this.db.query(
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
          await this.db.query(
            `SELECT acked_by, acked_at, note FROM alarm_acks WHERE meter_id = $1 AND boot = $2 AND seq = $3`,
            params,
          )
        ).rows
    const r = rows[0]
    if (!r) return undefined
    return {
      created: added.rows.length > 0,
      ack: { by: r.acked_by as string, at: new Date(r.acked_at as Date), note: r.note as string },
    }
  }

  async districts(q: { from?: Date; to?: Date }) {
    const { rows } = await this.reader.query(
      `WITH open_alarms AS (
         SELECT meter_id FROM (
           SELECT DISTINCT ON (meter_id, type) meter_id, active FROM alarm_events
           ORDER BY meter_id, type, ts DESC, boot DESC, seq DESC) newest WHERE active),
       used AS (
         SELECT meter_id, sum(volume_ml) AS water_ml, sum(energy_wh) AS energy_wh FROM readings
         WHERE ($1::timestamptz IS NULL OR ts >= $1) AND ($2::timestamptz IS NULL OR ts < $2) GROUP BY meter_id)
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

  async countDeadLetters() {
    const { rows } = await this.reader.query(`SELECT count(*) AS n FROM dead_letters`)
    return Number(rows[0].n)
  }

  async readView(sql: string, params: unknown[]) {
    if (this.readMaxCost > 0) {
      const cost = await planCost(this.reader, sql, params)
      if (cost > this.readMaxCost) throw new ReadCostError(cost, this.readMaxCost)
    }
    return (await this.reader.query(sql, params)).rows
  }

  async ping() {
    await this.db.query(`SELECT 1`)
  }

  async close() {
    await this.db.close()
  }
}
