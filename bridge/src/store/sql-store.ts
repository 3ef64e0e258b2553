// One SQL implementation of Store for every PostgreSQL-compatible engine. All statements are
// parameterised ($1...); identifiers never come from input.
import type { AlarmEvent, BirthInfo, DeadLetter, MeterRow, ReadingQuery, ReadingRow, Store } from "./store.js"

/** The part of a PostgreSQL client both engines provide. */
export interface Db {
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<{ rows: T[] }>
  /** Runs fn in one transaction on one connection; commits when it resolves. */
  transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T>
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
  `CREATE TABLE IF NOT EXISTS readings (
     meter_id text NOT NULL, ts timestamptz NOT NULL, interval_s integer NOT NULL,
     boot bigint NOT NULL, seq bigint NOT NULL, idx integer NOT NULL,
     volume_ml bigint, reverse_ml bigint, water_total_ml bigint,
     energy_wh bigint, energy_total_wh bigint, power_w integer, voltage_dv integer,
     pressure_min_pa integer, pressure_avg_pa integer, pressure_max_pa integer,
     time_synced boolean NOT NULL, backfill boolean NOT NULL,
     PRIMARY KEY (meter_id, boot, seq, idx))`,
  `CREATE INDEX IF NOT EXISTS readings_meter_ts ON readings (meter_id, ts)`,
  `CREATE TABLE IF NOT EXISTS alarms (
     meter_id text NOT NULL, boot bigint NOT NULL, seq bigint NOT NULL,
     type text NOT NULL, active boolean NOT NULL, ts timestamptz NOT NULL, value bigint NOT NULL,
     PRIMARY KEY (meter_id, boot, seq))`,
  `CREATE TABLE IF NOT EXISTS dead_letters (
     id bigserial PRIMARY KEY, received_at timestamptz NOT NULL, topic text NOT NULL,
     meter_id text, reason text NOT NULL, detail text NOT NULL, payload bytea NOT NULL)`,
]

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
  }
}

function toReading(r: Record<string, unknown>): ReadingRow {
  return {
    meterId: r.meter_id as string,
    ts: new Date(r.ts as Date),
    intervalS: Number(r.interval_s),
    boot: Number(r.boot),
    seq: Number(r.seq),
    idx: Number(r.idx),
    volumeMl: n(r.volume_ml),
    reverseMl: n(r.reverse_ml),
    waterTotalMl: n(r.water_total_ml),
    energyWh: n(r.energy_wh),
    energyTotalWh: n(r.energy_total_wh),
    powerW: n(r.power_w),
    voltageDv: n(r.voltage_dv),
    pressureMinPa: n(r.pressure_min_pa),
    pressureAvgPa: n(r.pressure_avg_pa),
    pressureMaxPa: n(r.pressure_max_pa),
    timeSynced: r.time_synced as boolean,
    backfill: r.backfill as boolean,
  }
}

const READING_COLUMNS = [
  "meter_id",
  "ts",
  "interval_s",
  "boot",
  "seq",
  "idx",
  "volume_ml",
  "reverse_ml",
  "water_total_ml",
  "energy_wh",
  "energy_total_wh",
  "power_w",
  "voltage_dv",
  "pressure_min_pa",
  "pressure_avg_pa",
  "pressure_max_pa",
  "time_synced",
  "backfill",
]

function readingValues(r: ReadingRow): unknown[] {
  return [
    r.meterId,
    r.ts,
    r.intervalS,
    r.boot,
    r.seq,
    r.idx,
    r.volumeMl,
    r.reverseMl,
    r.waterTotalMl,
    r.energyWh,
    r.energyTotalWh,
    r.powerW,
    r.voltageDv,
    r.pressureMinPa,
    r.pressureAvgPa,
    r.pressureMaxPa,
    r.timeSynced,
    r.backfill,
  ]
}

export class SqlStore implements Store {
  constructor(
    readonly engine: string,
    private readonly db: Db,
  ) {}

  async migrate() {
    for (const m of MIGRATIONS) await this.db.query(m)
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
    await this.db.query(
      `INSERT INTO meters (meter_id, online, first_seen, last_seen, firmware, board, boot, interval_s, batch, uptime_epoch_ms)
       VALUES ($1, true, $2, $2, $3, $4, $5, $6, $7, $8)
       ON CONFLICT (meter_id) DO UPDATE SET online = true, last_seen = EXCLUDED.last_seen,
         firmware = EXCLUDED.firmware, board = EXCLUDED.board, boot = EXCLUDED.boot,
         interval_s = EXCLUDED.interval_s, batch = EXCLUDED.batch, uptime_epoch_ms = EXCLUDED.uptime_epoch_ms`,
      [meterId, at, b.firmware, b.board, b.boot, b.intervalS, b.batch, b.uptimeEpochMs],
    )
  }

  async setOnline(meterId: string, online: boolean, at: Date) {
    await this.db.query(
      `INSERT INTO meters (meter_id, online, first_seen, last_seen) VALUES ($1, $2, $3, $3)
       ON CONFLICT (meter_id) DO UPDATE SET online = EXCLUDED.online`,
      [meterId, online, at],
    )
  }

  /** Claims (meter, boot, seq) in the frame ledger; false when it was claimed before. */
  private async claimFrame(tx: Db, meterId: string, boot: number, seq: number, kind: string, at: Date) {
    const { rows } = await tx.query(
      `INSERT INTO frames (meter_id, boot, seq, kind, received_at) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT DO NOTHING RETURNING seq`,
      [meterId, boot, seq, kind, at],
    )
    return rows.length === 1
  }

  async insertReadings(meterId: string, boot: number, seq: number, rows: ReadingRow[], at: Date) {
    return this.db.transaction(async (tx) => {
      if (!(await this.claimFrame(tx, meterId, boot, seq, "readings", at))) return false
      if (rows.length) {
        const params: unknown[] = []
        const tuples = rows.map((r) => {
          const vals = readingValues(r)
          const base = params.length
          params.push(...vals)
          return `(${vals.map((_, i) => `$${base + i + 1}`).join(", ")})`
        })
        await tx.query(
          `INSERT INTO readings (${READING_COLUMNS.join(", ")}) VALUES ${tuples.join(", ")}
           ON CONFLICT DO NOTHING`,
          params,
        )
      }
      return true
    })
  }

  async insertAlarm(e: AlarmEvent, at: Date) {
    return this.db.transaction(async (tx) => {
      if (!(await this.claimFrame(tx, e.meterId, e.boot, e.seq, "alarm", at))) return false
      await tx.query(
        `INSERT INTO alarms (meter_id, boot, seq, type, active, ts, value) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
        [e.meterId, e.boot, e.seq, e.type, e.active, e.ts, e.value],
      )
      return true
    })
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

  async alarms(meterId?: string) {
    const { rows } = await this.db.query(
      `SELECT * FROM alarms WHERE ($1::text IS NULL OR meter_id = $1) ORDER BY ts, meter_id, boot, seq`,
      [meterId ?? null],
    )
    return rows.map((r) => ({
      meterId: r.meter_id as string,
      boot: Number(r.boot),
      seq: Number(r.seq),
      type: r.type as string,
      active: r.active as boolean,
      ts: new Date(r.ts as Date),
      value: Number(r.value),
    }))
  }

  async addDeadLetter(d: DeadLetter, at: Date) {
    await this.db.query(
      `INSERT INTO dead_letters (received_at, topic, meter_id, reason, detail, payload) VALUES ($1, $2, $3, $4, $5, $6)`,
      [at, d.topic, d.meterId, d.reason, d.detail, Buffer.from(d.payload)],
    )
  }

  async deadLetters(limit = 100) {
    const { rows } = await this.db.query(`SELECT * FROM dead_letters ORDER BY id DESC LIMIT $1`, [limit])
    return rows.map((r) => ({
      id: Number(r.id),
      receivedAt: new Date(r.received_at as Date),
      topic: r.topic as string,
      meterId: (r.meter_id as string) ?? null,
      reason: r.reason as string,
      detail: r.detail as string,
      payload: new Uint8Array(r.payload as Uint8Array),
    }))
  }

  async ping() {
    await this.db.query(`SELECT 1`)
  }

  async close() {
    await this.db.close()
  }
}
