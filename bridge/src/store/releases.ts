// Releases in the data tier (issue 23 item 3): a signed program per (board, version), its bytes
// kept beside its manifest. The checks (signature, bytes against the manifest, board, size) are
// the bridge's (bridge/src/releases.ts) before anything is written; the store keeps one release per
// (board, version) and tells a repeat with the same bytes from one with other bytes.
import type { Db } from "./db.js"

/** A release as registered (without its bytes: Store.releaseBytecode). */
export interface ReleaseRow {
  id: number
  board: string
  version: string
  /** SHA-256 (hex) of the bytecode. */
  sha256: string
  size: number
  /** The Ed25519 signature over the canonical manifest (releases.ts canonicalManifest). */
  signature: Uint8Array
  /** The public id of the release key it verified under (releases.ts releaseKeyId). */
  keyId: string
  createdAt: Date
}

export type NewRelease = Omit<ReleaseRow, "id" | "createdAt"> & { bytecode: Uint8Array }

/**
 * What adding a release found: stored now; the same (board, version) with the same bytes
 * already (nothing written); the same (board, version) with other bytes (nothing written).
 */
export type ReleaseOutcome =
  | { kind: "created"; release: ReleaseRow }
  | { kind: "exists"; release: ReleaseRow }
  | { kind: "conflict"; release: ReleaseRow }

export interface ReleaseQuery {
  board?: string
  limit?: number
}

/** The Store's releases (the Store interface extends it). */
export interface ReleaseStore {
  /** Registers a checked release once per (board, version); see ReleaseOutcome. */
  addRelease(r: NewRelease, at: Date): Promise<ReleaseOutcome>
  /** Releases, newest first, optionally of one board. */
  listReleases(q?: ReleaseQuery): Promise<ReleaseRow[]>
  getRelease(id: number): Promise<ReleaseRow | undefined>
  /** The release's bytecode, exactly as registered; undefined for an unknown release. */
  releaseBytecode(id: number): Promise<Uint8Array | undefined>
}

/** The migration step that makes the table. */
export const RELEASES_DDL = [
  `CREATE TABLE IF NOT EXISTS releases (
     id bigserial PRIMARY KEY,
     board text NOT NULL, version text NOT NULL,
     sha256 text NOT NULL, size integer NOT NULL CHECK (size > 0),
     signature bytea NOT NULL, key_id text NOT NULL,
     bytecode bytea NOT NULL CHECK (length(bytecode) = size),
     created_at timestamptz NOT NULL,
     UNIQUE (board, version))`,
]

const COLUMNS = `id, board, version, sha256, size, signature, key_id, created_at`

const toRelease = (r: Record<string, unknown>): ReleaseRow => ({
  id: Number(r.id),
  board: r.board as string,
  version: r.version as string,
  sha256: r.sha256 as string,
  size: Number(r.size),
  signature: new Uint8Array(r.signature as Uint8Array),
  keyId: r.key_id as string,
  createdAt: new Date(r.created_at as Date),
})

export async function addRelease(db: Db, r: NewRelease, at: Date): Promise<ReleaseOutcome> {
  const { rows } = await db.query(
    `INSERT INTO releases (board, version, sha256, size, signature, key_id, bytecode, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (board, version) DO NOTHING RETURNING ${COLUMNS}`,
    [r.board, r.version, r.sha256, r.size, Buffer.from(r.signature), r.keyId, Buffer.from(r.bytecode), at],
  )
  if (rows[0]) return { kind: "created", release: toRelease(rows[0]) }
  const stored = await db.query(`SELECT ${COLUMNS} FROM releases WHERE board = $1 AND version = $2`, [
    r.board,
    r.version,
  ])
  const release = toRelease(stored.rows[0])
  return { kind: release.sha256 === r.sha256 && release.size === r.size ? "exists" : "conflict", release }
}

export async function listReleases(db: Db, q: ReleaseQuery = {}): Promise<ReleaseRow[]> {
  const { rows } = await db.query(
    `SELECT ${COLUMNS} FROM releases WHERE ($1::text IS NULL OR board = $1) ORDER BY id DESC LIMIT $2`,
    [q.board ?? null, q.limit ?? 1000],
  )
  return rows.map(toRelease)
}

export async function getRelease(db: Db, id: number): Promise<ReleaseRow | undefined> {
  const { rows } = await db.query(`SELECT ${COLUMNS} FROM releases WHERE id = $1`, [id])
  return rows[0] ? toRelease(rows[0]) : undefined
}

export async function releaseBytecode(db: Db, id: number): Promise<Uint8Array | undefined> {
  const { rows } = await db.query<{ bytecode: Uint8Array }>(`SELECT bytecode FROM releases WHERE id = $1`, [id])
  return rows[0] ? new Uint8Array(rows[0].bytecode) : undefined
}
