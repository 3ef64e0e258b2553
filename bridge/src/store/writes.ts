// The writes of the data tier on one connection or transaction: an ingest batch (IngestTx, in
// the batch's transaction) and SqlStore's single writes run the same statements. Readings go in
// by COPY; everything else as one statement of unnested arrays, whatever the number of rows.
import { createHash } from "node:crypto"
import { COLUMN_NAMES, READING_COLUMNS } from "./columns.js"
import type { Db } from "./db.js"
import { ensurePartition, monthKey, type PartitionState } from "./partitions.js"
import { blockHoldsSql, blockSlotSql, COMPACTIONS_SQL, heldSql, slotHash } from "./ledger-blocks.js"
import { BEFORE_SQL, SETTLE_SQL, settleParams, type BeforeRow } from "./district-rollups.js"
import * as dmaDays from "./dma-days.js"
import { aggregate, rebuildSql, ROLLUPS, upsertSql } from "./rollups.js"
import { toMeter } from "./rows.js"
import {
  DEAD_LETTER_HEAD_BYTES,
  type AlarmEvent,
  type BirthInfo,
  type DeadLetter,
  type FrameKey,
  type FrameOutcome,
  type IngestTx,
  type LedgerEntry,
  type MeterRow,
  type MeterSeal,
  type ReadingRow,
} from "./store.js"

/** A key for a bytea parameter (null stays null). */
export const bytes = (b: Uint8Array | null | undefined) => (b ? Buffer.from(b) : null)

/** Text from the network made safe for a text column: no NUL or other control characters, bounded. */
const printable = (s: string, max: number) =>
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  s.slice(0, max).replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`)

/** Parameters of a bulk statement: one typed array per column, unnested in SQL (any number of rows, few parameters). */
const unnest = (types: string[]) => `unnest(${types.map((t, i) => `$${i + 1}::${t}[]`).join(", ")})`

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

/** A frame id's content hash in the ledger: whole (its row), or the hex prefix a block keeps (ledger-blocks.ts). */
interface LedgerHash {
  sha256: string | null
  prefix: boolean
}

/**
 * A claim of a frame id the ledger holds already, answered by its hash there (the rule on
 * FrameOutcome): a block keeps a prefix, compared with the same prefix of the claim's hash.
 */
function repeatOutcome(stored: LedgerHash | undefined, sha256: string | undefined): FrameOutcome {
  if (!stored?.sha256 || !sha256) return { kind: "duplicate" }
  const same = stored.prefix
    ? sha256.slice(0, stored.sha256.length).toLowerCase() === stored.sha256
    : sha256 === stored.sha256
  return same ? { kind: "duplicate" } : { kind: "conflict", storedSha256: stored.sha256 }
}

/** The writes of one connection or transaction (an ingest batch's, or SqlStore's outside a batch). */
export class SqlWrites implements IngestTx {
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
   * One INSERT … ON CONFLICT DO NOTHING claims every new frame id that no ledger block holds
   * (ledger-blocks.ts); a second statement (a snapshot of its own, so it sees ids another bridge
   * committed meanwhile) reads the content hashes of the ids claimed before, in the ledger's rows
   * or blocks, which tell a redelivery (same bytes, or an entry without a hash) from a conflict.
   * Both read the count of ledger compactions: when a compaction committed in between, the
   * insert may have claimed again a frame whose row it moved into a block while the insert ran,
   * so the ids just claimed are checked against the blocks and such claims taken back (rare: a
   * replay of a frame being compacted at that moment; otherwise no further statement).
   */
  async claimFrames(frames: LedgerEntry[]): Promise<FrameOutcome[]> {
    const first = new Map<string, LedgerEntry>()
    for (const f of frames) if (!first.has(frameKey(f))) first.set(frameKey(f), f)
    const distinct = [...first.values()].sort((a, b) =>
      a.meterId < b.meterId ? -1 : a.meterId > b.meterId ? 1 : a.boot - b.boot || a.seq - b.seq,
    )
    const claimed = new Set<string>()
    const ledger = new Map<string, LedgerHash>()
    if (distinct.length) {
      const { rows } = await this.db.query<{ meter_id: string | null; boot: number; seq: number; epoch: number }>(
        `WITH epoch AS (${COMPACTIONS_SQL}),
         claimed AS (
           INSERT INTO frames (meter_id, boot, seq, kind, received_at, sha256)
           SELECT * FROM ${unnest(["text", "bigint", "bigint", "text", "timestamptz", "text"])}
             AS k(meter_id, boot, seq, kind, received_at, sha256)
           WHERE NOT ${blockHoldsSql("k")}
           ON CONFLICT DO NOTHING RETURNING meter_id, boot, seq)
         SELECT c.meter_id, c.boot, c.seq, epoch.n AS epoch FROM epoch LEFT JOIN claimed c ON true`,
        [
          distinct.map((f) => f.meterId),
          distinct.map((f) => f.boot),
          distinct.map((f) => f.seq),
          distinct.map((f) => f.kind),
          distinct.map((f) => f.at.toISOString()),
          distinct.map((f) => f.sha256 ?? null),
        ],
      )
      const epoch = Number(rows[0].epoch)
      for (const r of rows)
        if (r.meter_id !== null)
          claimed.add(frameKey({ meterId: r.meter_id, boot: Number(r.boot), seq: Number(r.seq) }))
      const before = distinct.filter((f) => !claimed.has(frameKey(f)))
      let epochNow: number
      if (before.length) {
        const stored = await this.db.query<{
          i: number
          sha256: string | null
          slot: Uint8Array | null
          epoch: number
        }>(
          `SELECT k.i, (SELECT f.sha256 FROM frames f WHERE f.meter_id = k.meter_id AND f.boot = k.boot AND f.seq = k.seq)
             AS sha256, ${blockSlotSql("k")} AS slot, (${COMPACTIONS_SQL}) AS epoch
           FROM unnest($1::text[], $2::bigint[], $3::bigint[]) WITH ORDINALITY AS k(meter_id, boot, seq, i)`,
          [before.map((f) => f.meterId), before.map((f) => f.boot), before.map((f) => f.seq)],
        )
        epochNow = Number(stored.rows[0].epoch)
        for (const r of stored.rows) {
          const k = frameKey(before[Number(r.i) - 1])
          const inBlock = slotHash(r.slot)
          ledger.set(
            k,
            r.sha256 !== null || !inBlock.held
              ? { sha256: r.sha256 ?? null, prefix: false }
              : { sha256: inBlock.sha256, prefix: true },
          )
        }
      } else epochNow = Number((await this.db.query<{ n: number }>(COMPACTIONS_SQL)).rows[0].n)
      if (epochNow !== epoch && claimed.size) await this.takeBackCompacted(distinct, claimed, ledger)
    }
    // the outcome of each entry in order, as if claimed one at a time
    const seen = new Set<string>()
    return frames.map((f): FrameOutcome => {
      const k = frameKey(f)
      if (!seen.has(k)) {
        seen.add(k)
        if (claimed.has(k)) {
          ledger.set(k, { sha256: f.sha256 ?? null, prefix: false })
          return { kind: "stored" }
        }
      }
      return repeatOutcome(ledger.get(k), f.sha256)
    })
  }

  /**
   * A compaction committed while claimFrames inserted: its claims of ids a block holds now (their
   * rows were moved while the insert ran) are taken back, their rows deleted in this transaction,
   * and answered by the block's hash.
   */
  private async takeBackCompacted(distinct: LedgerEntry[], claimed: Set<string>, ledger: Map<string, LedgerHash>) {
    const mine = distinct.filter((f) => claimed.has(frameKey(f)))
    const { rows } = await this.db.query<{ i: number; slot: Uint8Array | null }>(
      `SELECT i, slot FROM (
         SELECT k.i, ${blockSlotSql("k")} AS slot
         FROM unnest($1::text[], $2::bigint[], $3::bigint[]) WITH ORDINALITY AS k(meter_id, boot, seq, i) OFFSET 0) k
       WHERE ${heldSql("slot")}`,
      [mine.map((f) => f.meterId), mine.map((f) => f.boot), mine.map((f) => f.seq)],
    )
    if (!rows.length) return
    const back = rows.map((r) => ({ f: mine[Number(r.i) - 1], held: slotHash(r.slot) }))
    for (const { f, held } of back) {
      claimed.delete(frameKey(f))
      ledger.set(frameKey(f), { sha256: held.held ? held.sha256 : null, prefix: true })
    }
    await this.db.query(
      `DELETE FROM frames WHERE (meter_id, boot, seq) IN (SELECT * FROM ${unnest(["text", "bigint", "bigint"])})`,
      [back.map(({ f }) => f.meterId), back.map(({ f }) => f.boot), back.map(({ f }) => f.seq)],
    )
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
    // the consumption rollups follow in the same transaction (store/rollups.ts), each row written
    // once; then the districts' days and months those rows changed (district-rollups.ts), and the
    // DMAs' district days and months (dma-days.ts)
    let days: unknown[][] = []
    let before: BeforeRow[] = []
    let dmaBefore: dmaDays.DmaBeforeRow[] = []
    for (const r of ROLLUPS) {
      const params = aggregate(r, rows)
      if (r.unit === "day") {
        days = params
        before = (await this.db.query<BeforeRow>(BEFORE_SQL, [days[0], days[1]])).rows
        dmaBefore = (await this.db.query<dmaDays.DmaBeforeRow>(dmaDays.BEFORE_SQL, [days[0], days[1]])).rows
      }
      const stale = await this.db.query<{ meter_id: string; bucket: Date }>(upsertSql(r), params)
      if (stale.rows.length)
        await this.db.query(rebuildSql(r), [
          stale.rows.map((s) => s.meter_id),
          stale.rows.map((s) => new Date(s.bucket).toISOString()),
        ])
    }
    await this.db.query(SETTLE_SQL, settleParams(days, before))
    await this.db.query(dmaDays.SETTLE_SQL, dmaDays.settleParams(days, dmaBefore))
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
