// The frame ledger's cold form (issue 24 item 2): ledger rows older than a cut-off move into
// blocks of 8-byte content digests, so the ledger keeps deduplicating forever at about 8 bytes
// a frame (a `frames` row costs ≈ 150 with its key).
//
// Design. A block is one row per (meter_id, boot, block) holding the frames with seq in
// [block × BLOCK_SEQS, (block + 1) × BLOCK_SEQS): slot i of `hashes` (8 bytes at i × 8) is the
// frame with seq block × BLOCK_SEQS + i. A slot of zeros is a frame the block does not hold (a
// gap: claimable); UNKNOWN_DIGEST is a frame stored without a content hash (any replay is a
// duplicate, as for a `frames` row whose sha256 is null); any other value is the first 8 bytes of
// the frame's SHA-256 (a real digest equal to zero or UNKNOWN_DIGEST is kept as UNKNOWN_DIGEST).
// `hashes` ends at the block's last frame. Fixed blocks rather than variable runs
// (seq_lo, seq_hi) because: a lookup is an equality probe of the primary key; a gap costs 8 bytes
// (a run would end and a new one start, ≈ 100 bytes); a late frame that fills a gap merges into
// its block at the next compaction instead of leaving a run of one; and a meter's daily
// compactions append to the same row rather than leaving a small run per day. BLOCK_SEQS is part
// of the stored format (never change it): 232 slots keep a row under PostgreSQL's 2,032-byte
// TOAST threshold even with a 64-character meter id, so four rows fill a page and none is moved
// out of line (random digests do not compress).
//
// A block keeps neither a frame's kind nor its received_at (only its first and last frames'):
// nothing reads them once the claim is decided (bench/sim.ts reads received_at of recent rows).
//
// Collision odds: a conflicting frame (same id, other content) passes for a duplicate only if
// its digest's first 64 bits equal the stored frame's: 2^-64 ≈ 5.4 × 10^-20 per conflicting
// frame (by chance; sealed frames are authenticated before they reach the ledger).
//
// Exactly once. A (meter, boot, seq) is in `frames` or in a block, never both, never neither:
// compaction moves rows in one transaction per page of meters (DELETE … RETURNING, then the
// blocks upserted, then ledger_compactions' count raised), serialised by an advisory lock (two
// compactions never merge into one block at once). The claim (writes.ts) inserts only ids no
// block holds in its snapshot; a compaction that commits while the insert runs can let it claim
// a replay again (its old row deleted meanwhile), so the claim reads the count again in a later
// statement and, when it moved, checks the ids it claimed against the blocks and takes such
// claims back.
import type { Db } from "./db.js"

/** Frames per block: slots of seq block × BLOCK_SEQS + i (stored format: never change it). */
export const BLOCK_SEQS = 232
/** Bytes of a frame's digest: the first 8 bytes of its SHA-256. */
export const DIGEST_BYTES = 8
/** A slot of a frame stored without a content hash: any replay of it is a duplicate. */
export const UNKNOWN_DIGEST = Buffer.from("0000000000000001", "hex")
const ABSENT = Buffer.alloc(DIGEST_BYTES)

/** pg_advisory_xact_lock's first key for ledger compactions ("lb" in ASCII). */
export const LEDGER_LOCK_CLASS = 0x6c62

/** The migration step's statements (migrations.ts appends them as one step). */
export const LEDGER_BLOCKS_DDL = [
  `CREATE TABLE IF NOT EXISTS frame_blocks (
     meter_id text NOT NULL, boot bigint NOT NULL, block integer NOT NULL,
     first_received_at timestamptz NOT NULL, last_received_at timestamptz NOT NULL,
     hashes bytea NOT NULL,
     PRIMARY KEY (meter_id, boot, block))`,
  // a row stays inline (see BLOCK_SEQS): never compressed or moved to the TOAST table
  `ALTER TABLE frame_blocks ALTER COLUMN hashes SET STORAGE PLAIN`,
  // compactions committed: a claim compares it before and after its insert (writes.ts claimFrames)
  `CREATE TABLE IF NOT EXISTS ledger_compactions (one boolean PRIMARY KEY DEFAULT true CHECK (one), n bigint NOT NULL)`,
  `INSERT INTO ledger_compactions (n) VALUES (0) ON CONFLICT DO NOTHING`,
]

/** SQL: the count of ledger compactions committed, as the statement's snapshot sees it. */
export const COMPACTIONS_SQL = `SELECT (SELECT n FROM ledger_compactions) AS n`

/** A frame's slot value from its sha256 (hex; null: stored without one). */
export function digestOf(sha256: string | null | undefined): Buffer {
  if (!sha256 || !/^[0-9a-f]{16}/i.test(sha256)) return UNKNOWN_DIGEST
  const d = Buffer.from(sha256.slice(0, DIGEST_BYTES * 2), "hex")
  return d.equals(ABSENT) ? UNKNOWN_DIGEST : d
}

/**
 * What a slot says of a frame id: absent (claimable), or held with the hex prefix of its content
 * (null: stored without a content hash).
 */
export function slotHash(slot: Uint8Array | null | undefined): { held: false } | { held: true; sha256: string | null } {
  if (!slot || slot.length !== DIGEST_BYTES) return { held: false }
  const b = Buffer.from(slot.buffer, slot.byteOffset, slot.byteLength)
  if (b.equals(ABSENT)) return { held: false }
  return { held: true, sha256: b.equals(UNKNOWN_DIGEST) ? null : b.toString("hex") }
}

/** A ledger row on its way into a block. */
export interface LedgerRow {
  meterId: string
  boot: number
  seq: number
  receivedAt: Date
  sha256: string | null
}

/** A block as stored. */
export interface LedgerBlock {
  meterId: string
  boot: number
  block: number
  firstReceivedAt: Date
  lastReceivedAt: Date
  hashes: Buffer
}

const blockKey = (meterId: string, boot: number, block: number) => `${meterId}\u0000${boot}\u0000${block}`

/**
 * The blocks after `rows` move in: each row's digest in its block's slot, merged into the block
 * already stored (by key in `existing`). A slot held already keeps its digest (the ledger's first
 * word wins; `overlaps` counts such rows, which the claim never lets happen). Pure.
 */
export function mergeBlocks(
  rows: LedgerRow[],
  existing: Map<string, LedgerBlock>,
): { blocks: LedgerBlock[]; overlaps: number } {
  const out = new Map<string, LedgerBlock>()
  let overlaps = 0
  for (const r of rows) {
    const block = Math.floor(r.seq / BLOCK_SEQS)
    const slot = r.seq - block * BLOCK_SEQS
    const k = blockKey(r.meterId, r.boot, block)
    let b = out.get(k)
    if (!b) {
      const old = existing.get(k)
      b = old
        ? { ...old, hashes: Buffer.from(old.hashes) }
        : {
            meterId: r.meterId,
            boot: r.boot,
            block,
            firstReceivedAt: r.receivedAt,
            lastReceivedAt: r.receivedAt,
            hashes: Buffer.alloc(0),
          }
      out.set(k, b)
    }
    const end = (slot + 1) * DIGEST_BYTES
    if (b.hashes.length < end) b.hashes = Buffer.concat([b.hashes, Buffer.alloc(end - b.hashes.length)])
    const at = slot * DIGEST_BYTES
    if (!b.hashes.subarray(at, end).equals(ABSENT)) {
      overlaps++
      continue
    }
    digestOf(r.sha256).copy(b.hashes, at)
    if (r.receivedAt < b.firstReceivedAt) b.firstReceivedAt = r.receivedAt
    if (r.receivedAt > b.lastReceivedAt) b.lastReceivedAt = r.receivedAt
  }
  return { blocks: [...out.values()], overlaps }
}

/** The phases of one page's transaction, for fault tests (compactLedger's onPhase). */
export type CompactionPhase = "deleted" | "merged" | "written"

export interface CompactLedgerOptions {
  /** Meters per transaction (default 50: a year of 50 meters is ≈ 440,000 rows moved at once). */
  metersPerTransaction?: number
  /** Only these meters (default: every meter with ledger rows). */
  meterIds?: string[]
  /** Tests: runs inside each page's transaction after each phase (a fault injected here rolls the page back). */
  onPhase?: (phase: CompactionPhase, tx: Db) => Promise<void>
}

/** What a compaction did. */
export interface LedgerCompaction {
  /** Ledger rows moved into blocks. */
  frames: number
  /** Blocks written (new or merged). */
  blocks: number
  /** Transactions committed (pages of meters with rows to move). */
  transactions: number
  /** Set when the move left the key index of `frames` mostly empty and it was rebuilt (ledger-index.ts): its bytes. */
  indexRebuilt?: { before: number; after: number }
}

/** Compaction of the frame ledger, composed into the Store (store.ts). */
export interface LedgerStore {
  /**
   * Moves the ledger rows received before `before` into blocks (this module's design note), one
   * transaction per page of meters; idempotent, and safe to stop at any point: every frame id is
   * then in the ledger's rows or in a block, exactly once.
   */
  compactLedger(before: Date, opts?: CompactLedgerOptions): Promise<LedgerCompaction>
}

/**
 * Moves these meters' ledger rows received before `before` into blocks, inside the caller's
 * transaction `tx` (a compaction job may move a page of meters' readings and ledger together).
 * Takes the ledger's compaction lock until `tx` ends.
 */
export async function compactLedgerMeters(
  tx: Db,
  meterIds: string[],
  before: Date,
  onPhase?: CompactLedgerOptions["onPhase"],
): Promise<{ frames: number; blocks: number }> {
  if (!meterIds.length) return { frames: 0, blocks: 0 }
  await tx.query(`SELECT pg_advisory_xact_lock(${LEDGER_LOCK_CLASS}, 0)`)
  const moved = await tx.query<{ meter_id: string; boot: number; seq: number; received_at: Date; sha: string | null }>(
    `DELETE FROM frames WHERE meter_id = ANY($1::text[]) AND received_at < $2
     RETURNING meter_id, boot, seq, received_at, left(sha256, ${DIGEST_BYTES * 2}) AS sha`,
    [meterIds, before.toISOString()],
  )
  await onPhase?.("deleted", tx)
  if (!moved.rows.length) return { frames: 0, blocks: 0 }
  const rows: LedgerRow[] = moved.rows.map((r) => ({
    meterId: r.meter_id,
    boot: Number(r.boot),
    seq: Number(r.seq),
    receivedAt: new Date(r.received_at),
    sha256: r.sha,
  }))
  const keys = new Map<string, [string, number, number]>()
  for (const r of rows) {
    const block = Math.floor(r.seq / BLOCK_SEQS)
    keys.set(blockKey(r.meterId, r.boot, block), [r.meterId, r.boot, block])
  }
  const k = [...keys.values()]
  const stored = await tx.query<{
    meter_id: string
    boot: number
    block: number
    first_received_at: Date
    last_received_at: Date
    hashes: string
  }>(
    `SELECT b.meter_id, b.boot, b.block, b.first_received_at, b.last_received_at, encode(b.hashes, 'hex') AS hashes
     FROM frame_blocks b JOIN unnest($1::text[], $2::bigint[], $3::integer[]) AS k(meter_id, boot, block)
       USING (meter_id, boot, block)`,
    [k.map((x) => x[0]), k.map((x) => x[1]), k.map((x) => x[2])],
  )
  const existing = new Map<string, LedgerBlock>()
  for (const b of stored.rows) {
    const block: LedgerBlock = {
      meterId: b.meter_id,
      boot: Number(b.boot),
      block: Number(b.block),
      firstReceivedAt: new Date(b.first_received_at),
      lastReceivedAt: new Date(b.last_received_at),
      hashes: Buffer.from(b.hashes, "hex"),
    }
    existing.set(blockKey(block.meterId, block.boot, block.block), block)
  }
  const { blocks } = mergeBlocks(rows, existing)
  await onPhase?.("merged", tx)
  await tx.query(
    `INSERT INTO frame_blocks (meter_id, boot, block, first_received_at, last_received_at, hashes)
     SELECT meter_id, boot, block, first_at, last_at, decode(hashes, 'hex')
     FROM unnest($1::text[], $2::bigint[], $3::integer[], $4::timestamptz[], $5::timestamptz[], $6::text[])
       AS b(meter_id, boot, block, first_at, last_at, hashes)
     ON CONFLICT (meter_id, boot, block) DO UPDATE SET first_received_at = EXCLUDED.first_received_at,
       last_received_at = EXCLUDED.last_received_at, hashes = EXCLUDED.hashes`,
    [
      blocks.map((b) => b.meterId),
      blocks.map((b) => b.boot),
      blocks.map((b) => b.block),
      blocks.map((b) => b.firstReceivedAt.toISOString()),
      blocks.map((b) => b.lastReceivedAt.toISOString()),
      blocks.map((b) => b.hashes.toString("hex")),
    ],
  )
  // a claim that inserted while this page moved rows sees the count change (writes.ts claimFrames)
  await tx.query(`UPDATE ledger_compactions SET n = n + 1`)
  await onPhase?.("written", tx)
  return { frames: rows.length, blocks: blocks.length }
}

/** A page of the meter ids that have ledger rows, after `after`: a loose scan of the ledger's key. */
async function ledgerMeters(db: Db, after: string | null, limit: number): Promise<string[]> {
  const { rows } = await db.query<{ meter_id: string }>(
    `WITH RECURSIVE m(meter_id) AS (
       (SELECT meter_id FROM frames WHERE $1::text IS NULL OR meter_id > $1 ORDER BY meter_id LIMIT 1)
       UNION ALL
       SELECT (SELECT f.meter_id FROM frames f WHERE f.meter_id > m.meter_id ORDER BY f.meter_id LIMIT 1)
       FROM m WHERE m.meter_id IS NOT NULL)
     SELECT meter_id FROM m WHERE meter_id IS NOT NULL LIMIT $2`,
    [after, limit],
  )
  return rows.map((r) => r.meter_id)
}

/**
 * Store.compactLedger on `db`: pages of meters in meter id order, each moved in a transaction of
 * its own (compactLedgerMeters). Stopped at any point (a crash, a cut connection), it leaves the
 * pages before committed and the rest as rows; run again, it goes on.
 */
export async function compactLedger(db: Db, before: Date, opts: CompactLedgerOptions = {}): Promise<LedgerCompaction> {
  const per = Math.max(1, opts.metersPerTransaction ?? 50)
  const done: LedgerCompaction = { frames: 0, blocks: 0, transactions: 0 }
  const page = async (ids: string[]) => {
    const r = await db.transaction((tx) => compactLedgerMeters(tx, ids, before, opts.onPhase))
    done.frames += r.frames
    done.blocks += r.blocks
    if (r.frames) done.transactions++
  }
  if (opts.meterIds) {
    const ids = [...new Set(opts.meterIds)].sort()
    for (let i = 0; i < ids.length; i += per) await page(ids.slice(i, i + per))
    return done
  }
  for (let after: string | null = null; ;) {
    const ids = await ledgerMeters(db, after, per)
    if (!ids.length) return done
    await page(ids)
    after = ids[ids.length - 1]
  }
}

/** Bytes of the ledger on disk, rows and blocks, with their indexes and TOAST (pg_total_relation_size). */
export async function ledgerBytes(db: Db): Promise<{ frames: number; blocks: number }> {
  const { rows } = await db.query<{ f: string; b: string }>(
    `SELECT pg_total_relation_size('frames') AS f, pg_total_relation_size('frame_blocks') AS b`,
  )
  return { frames: Number(rows[0].f), blocks: Number(rows[0].b) }
}

/** The claim's check of frame ids against the blocks (writes.ts): the slot of each id, where a block holds it. */
export const blockSlotSql = (k: string) =>
  `(SELECT substring(b.hashes FROM (${k}.seq % ${BLOCK_SEQS})::integer * ${DIGEST_BYTES} + 1 FOR ${DIGEST_BYTES})
    FROM frame_blocks b
    WHERE b.meter_id = ${k}.meter_id AND b.boot = ${k}.boot AND b.block = (${k}.seq / ${BLOCK_SEQS})::integer)`

/**
 * Every frame id the ledger knows for these meters, from its rows and its blocks (a block's held
 * slots), one entry per row or slot: an id listed twice would be an id stored twice. For tests and
 * checks; it reads every block of the meters.
 */
export async function ledgerFrameIds(
  db: Db,
  meterIds: string[],
): Promise<{ meterId: string; boot: number; seq: number; in: "rows" | "blocks" }[]> {
  const { rows } = await db.query<{ meter_id: string; boot: number; seq: number; src: "rows" | "blocks" }>(
    `SELECT meter_id, boot, seq, 'rows' AS src FROM frames WHERE meter_id = ANY($1::text[])
     UNION ALL
     SELECT b.meter_id, b.boot, b.block::bigint * ${BLOCK_SEQS} + s, 'blocks'
     FROM frame_blocks b, generate_series(0, length(b.hashes) / ${DIGEST_BYTES} - 1) AS s
     WHERE b.meter_id = ANY($1::text[])
       AND substring(b.hashes FROM s * ${DIGEST_BYTES} + 1 FOR ${DIGEST_BYTES}) <> '\\x${ABSENT.toString("hex")}'::bytea`,
    [meterIds],
  )
  return rows.map((r) => ({ meterId: r.meter_id, boot: Number(r.boot), seq: Number(r.seq), in: r.src }))
}

/** SQL: the slot `slot` (blockSlotSql's) holds a frame. */
export const heldSql = (slot: string) =>
  `(${slot} IS NOT NULL AND length(${slot}) = ${DIGEST_BYTES} AND ${slot} <> '\\x${ABSENT.toString("hex")}'::bytea)`

/** SQL: a block holds frame id `k` (a row with meter_id, boot, seq): the claim's insert leaves such ids out. */
export const blockHoldsSql = (k: string) =>
  `EXISTS (SELECT 1 FROM frame_blocks b
    WHERE b.meter_id = ${k}.meter_id AND b.boot = ${k}.boot AND b.block = (${k}.seq / ${BLOCK_SEQS})::integer
      AND ${heldSql(`substring(b.hashes FROM (${k}.seq % ${BLOCK_SEQS})::integer * ${DIGEST_BYTES} + 1 FOR ${DIGEST_BYTES})`)})`
