// One SQL implementation of Store for every PostgreSQL-compatible engine. All statements are
// parameterised ($1...); identifiers never come from input.
import { createHash } from "node:crypto"
import { COLUMN_DDL, COLUMN_NAMES, READING_COLUMNS, toReading } from "./columns.js"
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
} from "./store.js"

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
}

export const MIGRATIONS: string[] = [
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
  `CREATE TABLE IF NOT EXISTS readings (${COLUMN_DDL}, PRIMARY KEY (meter_id, boot, seq, idx))`,
  `CREATE INDEX IF NOT EXISTS readings_meter_ts ON readings (meter_id, ts)`,
  `CREATE TABLE IF NOT EXISTS alarms (
     meter_id text NOT NULL, boot bigint NOT NULL, seq bigint NOT NULL,
     type text NOT NULL, active boolean NOT NULL, ts timestamptz NOT NULL, value bigint NOT NULL,
     PRIMARY KEY (meter_id, boot, seq))`,
  `CREATE TABLE IF NOT EXISTS dead_letters (
     id bigserial PRIMARY KEY, received_at timestamptz NOT NULL, topic text NOT NULL,
     meter_id text, reason text NOT NULL, detail text NOT NULL, payload bytea NOT NULL)`,
  // issue 5: inactivity, bridge-raised alarms, the fleet-wide latest reading.
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
  `CREATE TABLE IF NOT EXISTS meter_latest (${COLUMN_DDL}, PRIMARY KEY (meter_id))`,
  // Fills meter_latest once for a data tier migrated from before it existed (a no-op afterwards).
  `INSERT INTO meter_latest
     SELECT DISTINCT ON (meter_id) ${COLUMN_NAMES.join(", ")}
     FROM readings WHERE NOT EXISTS (SELECT 1 FROM meter_latest)
     ORDER BY meter_id, ts DESC, boot DESC, seq DESC, idx DESC
   ON CONFLICT DO NOTHING`,
  // issue 9: the ledger keeps each frame's content hash (a same-id frame with other content is a
  // conflict, not a duplicate); liveness knows the birth it belongs to; dead letters are bounded.
  `ALTER TABLE frames ADD COLUMN IF NOT EXISTS sha256 text`,
  `ALTER TABLE meters ADD COLUMN IF NOT EXISTS birth_seq bigint`,
  `ALTER TABLE meters ADD COLUMN IF NOT EXISTS born_at timestamptz`,
  `ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS payload_bytes integer`,
  `ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS payload_sha256 text`,
  `ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS stored_sha256 text`,
  // dead letters from before: keep the first ${DEAD_LETTER_HEAD_BYTES} bytes, their size and hash
  `UPDATE dead_letters SET payload_bytes = length(payload), payload_sha256 = encode(sha256(payload), 'hex'),
     payload = substring(payload FROM 1 FOR ${DEAD_LETTER_HEAD_BYTES}) WHERE payload_bytes IS NULL`,
  `CREATE INDEX IF NOT EXISTS dead_letters_received_at ON dead_letters (received_at)`,
  // issue 10: sealed frames. Meters registered before default to open (they have no key).
  `ALTER TABLE meters ADD COLUMN IF NOT EXISTS birth_link bigint`,
  `ALTER TABLE meters ADD COLUMN IF NOT EXISTS seal_policy text NOT NULL DEFAULT 'open'`,
  `ALTER TABLE meters ADD COLUMN IF NOT EXISTS seal_key bytea`,
  `ALTER TABLE meters ADD COLUMN IF NOT EXISTS seal_key_next bytea`,
  // issue 11: what a meter measures and which alarm rules it evaluates (proto Birth 12, 13)
  `ALTER TABLE meters ADD COLUMN IF NOT EXISTS channels text[]`,
  `ALTER TABLE meters ADD COLUMN IF NOT EXISTS alarm_rules text[]`,
]

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
class SqlWrites implements IngestTx {
  constructor(private readonly db: Db) {}

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
         uptime_epoch_ms, birth_seq, born_at, birth_link, channels, alarm_rules)
       VALUES ($1, true, $2, $2, $3, $4, $5, $6, $7, $8, $9, $2, $10, $11::text[], $12::text[])
       ON CONFLICT (meter_id) DO UPDATE SET online = true, last_seen = GREATEST(meters.last_seen, EXCLUDED.last_seen),
         firmware = EXCLUDED.firmware, board = EXCLUDED.board, boot = EXCLUDED.boot,
         interval_s = EXCLUDED.interval_s, batch = EXCLUDED.batch, uptime_epoch_ms = EXCLUDED.uptime_epoch_ms,
         birth_seq = EXCLUDED.birth_seq, born_at = EXCLUDED.born_at, birth_link = EXCLUDED.birth_link,
         channels = EXCLUDED.channels, alarm_rules = EXCLUDED.alarm_rules`,
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
    await this.db.copyFrom("readings", COLUMN_NAMES, copyText(rows))
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
  readonly features = { hypertable: false }

  constructor(
    readonly engine: string,
    /** The engine's connection; public for tools (benchmarks seed with it), not for the API. */
    readonly db: Db,
  ) {
    this.writes = new SqlWrites(db)
  }

  /** Single statements outside a batch: the same SQL as a batch's. */
  private readonly writes: SqlWrites

  async migrate() {
    for (const m of MIGRATIONS) await this.db.query(m)
    this.features.hypertable = await this.makeHypertable()
  }

  /**
   * Where the TimescaleDB extension is available, readings become a hypertable on ts. TimescaleDB
   * wants the partitioning column in every unique index, so the primary key gains ts (exactly-once
   * is the frame ledger's job; the key only guards against a frame's rows twice). Without the
   * extension (or the right to create it), readings stay a plain table.
   */
  private async makeHypertable(): Promise<boolean> {
    const available = await this.db
      .query(`SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'`)
      .then((r) => r.rows.length > 0)
      .catch(() => false)
    if (!available) return false
    try {
      await this.db.query(`CREATE EXTENSION IF NOT EXISTS timescaledb`)
      const { rows } = await this.db.query(
        `SELECT 1 FROM timescaledb_information.hypertables
         WHERE hypertable_name = 'readings' AND hypertable_schema = current_schema()`,
      )
      if (rows.length) return true
      await this.db.transaction(async (tx) => {
        await tx.query(`ALTER TABLE readings DROP CONSTRAINT IF EXISTS readings_pkey`)
        await tx.query(`ALTER TABLE readings ADD PRIMARY KEY (meter_id, boot, seq, idx, ts)`)
        await tx.query(`SELECT create_hypertable('readings', 'ts', migrate_data => true)`)
      })
      return true
    } catch {
      return false
    }
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

  async listMeters() {
    const { rows } = await this.db.query(`SELECT * FROM meters ORDER BY meter_id`)
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
    return this.db.transaction((tx) => fn(new SqlWrites(tx)))
  }

  async raiseBridgeAlarm(meterId: string, type: string, value: number, at: Date) {
    return this.ingestBatch((tx) => tx.raiseBridgeAlarm(meterId, type, value, at))
  }

  async readings(meterId: string, q: ReadingQuery = {}) {
    const { rows } = await this.db.query(
      `SELECT * FROM readings WHERE meter_id = $1
         AND ($2::timestamptz IS NULL OR ts >= $2) AND ($3::timestamptz IS NULL OR ts < $3)
       ORDER BY ts, boot, seq, idx LIMIT $4`,
      [meterId, q.from ?? null, q.to ?? null, q.limit ?? 10000],
    )
    return rows.map(toReading)
  }

  async latest(q: LatestQuery = {}) {
    const { rows } = await this.db.query(
      `SELECT * FROM meter_latest WHERE ($1::text IS NULL OR meter_id > $1) ORDER BY meter_id LIMIT $2`,
      [q.after ?? null, q.limit ?? 1_000_000],
    )
    return rows.map(toReading)
  }

  async latestJson(q: LatestQuery = {}) {
    const camel = (c: string) => c.replace(/_([a-z])/g, (_, x: string) => x.toUpperCase())
    const columns = COLUMN_NAMES.map((c) =>
      c === "ts" ? `to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS ts` : `${c} AS "${camel(c)}"`,
    )
    // json_agg over an aliased row is faster than json_build_object per row
    const { rows } = await this.db.query<{ json: string | null; count: number; last: string | null }>(
      `SELECT json_agg(l ORDER BY "meterId")::text AS json, count(*) AS count, max("meterId") AS last
       FROM (SELECT ${columns.join(", ")} FROM meter_latest
             WHERE ($1::text IS NULL OR meter_id > $1) ORDER BY meter_id LIMIT $2) l`,
      [q.after ?? null, q.limit ?? 1_000_000],
    )
    const r = rows[0]
    return { json: r.json ?? "[]", count: Number(r.count), last: r.last }
  }

  /**
   * Consumption per bucket (the rule is on ConsumptionRow): LAG over the meter's readings in time
   * order, starting from the last reading before `from` so the first bucket's difference has its
   * predecessor.
   */
  async consumption(meterId: string, q: ConsumptionQuery): Promise<ConsumptionRow[]> {
    const bucket = BUCKET_SQL[q.bucket]
    if (!bucket) throw new Error(`unknown bucket ${q.bucket}`)
    const { rows } = await this.db.query(
      `WITH r AS (
         SELECT ts, interval_s, volume_ml, water_total_ml, energy_wh, energy_total_wh,
           LAG(water_total_ml) OVER w AS prev_water, LAG(energy_total_wh) OVER w AS prev_energy,
           LAG(ts + make_interval(secs => interval_s)) OVER w AS prev_end
         FROM readings
         WHERE meter_id = $1 AND ($3::timestamptz IS NULL OR ts < $3)
           AND ts >= COALESCE(
             (SELECT max(ts) FROM readings WHERE meter_id = $1 AND ts < $2::timestamptz), $2, '-infinity')
         WINDOW w AS (ORDER BY ts, boot, seq, idx))
       SELECT ${bucket} AS start,
         sum(CASE WHEN water_total_ml >= prev_water THEN water_total_ml - prev_water ELSE volume_ml END) AS water_ml,
         sum(CASE WHEN energy_total_wh >= prev_energy THEN energy_total_wh - prev_energy ELSE energy_wh END) AS energy_wh,
         count(*) AS readings,
         bool_or(ts > prev_end) AS gap
       FROM r WHERE $2::timestamptz IS NULL OR ts >= $2
       GROUP BY 1 ORDER BY 1`,
      // $4 (time zone) only where the bucket expression uses it: PostgreSQL rejects untyped extras.
      [meterId, q.from ?? null, q.to ?? null, q.tz ?? "UTC"].slice(0, q.bucket === "15min" ? 3 : 4),
    )
    return rows.map((r) => ({
      start: new Date(r.start as Date),
      waterMl: n(r.water_ml),
      energyWh: n(r.energy_wh),
      readings: Number(r.readings),
      gap: !!r.gap,
    }))
  }

  async alarms(q: AlarmQuery = {}) {
    const params = [q.meterId ?? null, q.from ?? null, q.to ?? null, q.limit ?? 10000]
    const where = `($1::text IS NULL OR meter_id = $1)
      AND ($2::timestamptz IS NULL OR ts >= $2) AND ($3::timestamptz IS NULL OR ts < $3)`
    const { rows } = await this.db.query(
      q.open
        ? // open: the newest edge of each (meter, type) is a raise
          `SELECT * FROM (
             SELECT DISTINCT ON (meter_id, type) * FROM alarm_events WHERE ($1::text IS NULL OR meter_id = $1)
             ORDER BY meter_id, type, ts DESC, boot DESC, seq DESC) newest
           WHERE active AND ${where} ORDER BY ts, meter_id, boot, seq LIMIT $4`
        : `SELECT * FROM alarm_events WHERE ${where} ORDER BY ts, meter_id, boot, seq LIMIT $4`,
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
    const { rows } = await this.db.query(
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

  async ping() {
    await this.db.query(`SELECT 1`)
  }

  async close() {
    await this.db.close()
  }
}
