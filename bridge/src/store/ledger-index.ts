// The frame ledger's key index after a large compaction (issue 24). VACUUM gives an emptied
// table's trailing heap pages back to the file system, but never a B-tree's: the index of
// `frames` (meter_id, boot, seq) keeps its peak size, ≈ 590 KB per meter-year measured by
// `npm run bench:year` (2025 compacted at once, frames left empty), more than half of the
// 1 MB per meter-year budget. Rebuilding it returns that. In steady state (the hourly job moving
// an hour of frames), new entries reuse the pages VACUUM freed, and no rebuild is due.
import type { Db } from "./db.js"

/** Bytes per live entry a rebuilt index needs at most: key ≈ 24-40 B, tuple header, line pointer, fill factor. */
const ENTRY_BYTES = 64
/** Rebuild when the index is this many times what its live entries need... */
const BLOAT_FACTOR = 4
/** ...and larger than this (no rebuild of a small ledger for a few pages). */
export const LEDGER_INDEX_FLOOR_BYTES = 1 << 20

export interface LedgerIndexShrink {
  /** The index's bytes before, and after (equal when no rebuild was due). */
  before: number
  after: number
  rebuilt: boolean
}

/**
 * Rebuilds the ledger's key index when it holds far more pages than its entries need. On
 * PostgreSQL, REINDEX CONCURRENTLY: claims insert and look up throughout (it takes SHARE UPDATE
 * EXCLUSIVE, not the lock writes wait for); a rebuild that failed before (a killed bridge) leaves
 * an invalid copy, dropped first. PGlite has one connection: a plain REINDEX.
 */
export async function shrinkLedgerIndex(db: Db, engine: "postgres" | "pglite"): Promise<LedgerIndexShrink> {
  const size = async () => {
    const { rows } = await db.query<{ b: string }>(
      `SELECT pg_relation_size(i.indexrelid) AS b FROM pg_index i
       WHERE i.indrelid = 'frames'::regclass AND i.indisprimary`,
    )
    return Number(rows[0]?.b ?? 0)
  }
  const before = await size()
  if (before <= LEDGER_INDEX_FLOOR_BYTES) return { before, after: before, rebuilt: false }
  const { rows } = await db.query<{ n: string }>(`SELECT count(*) AS n FROM frames`)
  if (before <= BLOAT_FACTOR * ENTRY_BYTES * Number(rows[0].n)) return { before, after: before, rebuilt: false }
  if (engine === "postgres") {
    const { rows: invalid } = await db.query<{ name: string }>(
      `SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name FROM pg_index i
       JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE i.indrelid = 'frames'::regclass AND NOT i.indisvalid`,
    )
    for (const { name } of invalid) await db.query(`DROP INDEX CONCURRENTLY IF EXISTS ${name}`)
    await db.query(`REINDEX TABLE CONCURRENTLY frames`)
  } else await db.query(`REINDEX TABLE frames`)
  return { before, after: await size(), rebuilt: true }
}
