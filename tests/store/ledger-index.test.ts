// The frame ledger's key index after compaction (store/ledger-index.ts), on both engines: a
// compaction that empties the ledger rebuilds its index (VACUUM would leave it at full size), one
// that leaves it full of live entries does not, and the rebuilt ledger still tells replays from
// new frames. On PostgreSQL, an invalid copy left by a rebuild that died is dropped first.
import { createHash, randomBytes } from "node:crypto"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, test } from "vitest"
import { openPglite, openPostgres } from "../../bridge/src/store/engines.js"
import { LEDGER_INDEX_FLOOR_BYTES } from "../../bridge/src/store/ledger-index.js"
import type { SqlStore } from "../../bridge/src/store/sql-store.js"
import type { LedgerEntry, Store } from "../../bridge/src/store/store.js"
import { PG_URL, dropSchema } from "../helpers.js"

const Y = Date.parse("2024-03-01T00:00:00Z")
const CUT = new Date("2025-01-01T00:00:00Z")
/** Frames per meter and meters: 40,000 keys make an index of more than LEDGER_INDEX_FLOOR_BYTES. */
const PER_METER = 1000
const METERS = 40

const entry = (meterId: string, seq: number, at: Date): LedgerEntry => ({
  meterId,
  boot: 2,
  seq,
  kind: "readings",
  at,
  sha256: createHash("sha256").update(`${meterId}/${seq}`).digest("hex"),
})

/** METERS × PER_METER frames of `prefix` meters, received at `at(seq)`. */
async function seed(store: Store, prefix: string, at: (seq: number) => Date) {
  for (let k = 0; k < METERS; k++) {
    const m = `${prefix}-${k}`
    const frames = Array.from({ length: PER_METER }, (_, i) => entry(m, i + 1, at(i + 1)))
    const out = await store.ingestBatch((tx) => tx.claimFrames(frames))
    expect(out.every((o) => o.kind === "stored")).toBe(true)
  }
}

const indexBytes = async (store: Store) => {
  const { rows } = await (store as SqlStore).db.query<{ b: string }>(
    `SELECT pg_relation_size(indexrelid) AS b FROM pg_index WHERE indrelid = 'frames'::regclass AND indisprimary`,
  )
  return Number(rows[0].b)
}

const engines: [string, () => Promise<{ store: Store; done: () => Promise<void> }>][] = [
  [
    "postgres",
    async () => {
      const schema = `li_${randomBytes(4).toString("hex")}`
      const store = await openPostgres(PG_URL, { schema })
      await store.migrate()
      return { store, done: async () => (await store.close(), await dropSchema(schema)) }
    },
  ],
  [
    "pglite",
    async () => {
      const dir = mkdtempSync(join(tmpdir(), "cm-li-"))
      const store = await openPglite(dir)
      await store.migrate()
      return { store, done: async () => (await store.close(), rmSync(dir, { recursive: true, force: true })) }
    },
  ],
]

describe.each(engines)("%s: the ledger's index after compaction", (engine, open) => {
  const cleanup: (() => Promise<void>)[] = []
  afterAll(async () => {
    for (const c of cleanup) await c()
  })

  test("emptied by compaction: rebuilt to a fraction of its size; replays stay duplicates", async () => {
    const { store, done } = await open()
    cleanup.push(done)
    await seed(store, "old", (s) => new Date(Y + s * 60_000))
    const peak = await indexBytes(store)
    expect(peak).toBeGreaterThan(LEDGER_INDEX_FLOOR_BYTES)
    if (engine === "postgres") {
      // what a rebuild killed halfway leaves: an invalid copy of the index
      const db = (store as SqlStore).db
      await db.query(`CREATE UNIQUE INDEX frames_pkey_ccnew ON frames (meter_id, boot, seq)`)
      await db.query(`UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'frames_pkey_ccnew'::regclass`)
    }
    const out = await store.compactLedger(CUT)
    expect(out.frames).toBe(METERS * PER_METER)
    expect(out.indexRebuilt?.before).toBe(peak)
    expect(out.indexRebuilt!.after).toBeLessThan(peak / 20)
    expect(await indexBytes(store)).toBe(out.indexRebuilt!.after)
    const { rows: invalid } = await (store as SqlStore).db.query(
      `SELECT 1 FROM pg_index WHERE indrelid = 'frames'::regclass AND NOT indisvalid`,
    )
    expect(invalid).toHaveLength(0)
    // a replay from last year is a duplicate; a frame never seen, stored; its replay, a duplicate
    const now = new Date()
    const claimed = await store.ingestBatch((tx) =>
      tx.claimFrames([
        entry("old-7", 500, now),
        entry("old-7", PER_METER + 1, now),
        entry("old-7", PER_METER + 1, now),
      ]),
    )
    expect(claimed.map((c) => c.kind)).toEqual(["duplicate", "stored", "duplicate"])
    // nothing left to move: no rebuild
    expect((await store.compactLedger(CUT)).indexRebuilt).toBeUndefined()
  })
})

// the threshold is the same code on both engines: PostgreSQL only (seeding PGlite takes 9 s)
test("postgres: still full of live entries, the index is not rebuilt", async () => {
  const { store, done } = await engines[0][1]()
  try {
    // the recent frames stay rows; one old frame per meter moves
    await seed(store, "new", (s) => (s === 1 ? new Date(Y) : new Date(CUT.getTime() + s * 60_000)))
    expect(await indexBytes(store)).toBeGreaterThan(LEDGER_INDEX_FLOOR_BYTES)
    const out = await store.compactLedger(CUT)
    expect(out.frames).toBe(METERS)
    expect(out.indexRebuilt).toBeUndefined()
  } finally {
    await done()
  }
})
