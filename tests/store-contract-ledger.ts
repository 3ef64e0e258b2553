// The frame ledger's compaction part of the Store contract (issue 24 item 2), run by
// describeStoreContract (tests/store-contract.ts) on both engines: ledger rows of last year move
// into blocks of 8-byte digests (store/ledger-blocks.ts), and the ledger still tells a replay
// (duplicate) from a same-id frame with other content (conflict); a late frame into a gap is
// stored once; compacting again is a no-op; the ledger shrinks.
import { createHash } from "node:crypto"
import { expect, test } from "vitest"
import { BLOCK_SEQS, ledgerBytes, ledgerFrameIds } from "../bridge/src/store/ledger-blocks.js"
import type { SqlStore } from "../bridge/src/store/sql-store.js"
import type { FrameOutcome, LedgerEntry, Store } from "../bridge/src/store/store.js"
import { readingRow } from "../testkit/rows.js"
import { insertReadings } from "../testkit/store-writes.js"
import { uid } from "./helpers.js"

/** Last year, as the contract's other parts see it: every ledger row of these tests is older than CUT. */
const Y = Date.parse("2024-02-01T00:00:00Z")
const CUT = new Date("2025-01-01T00:00:00Z")
const HOUR = 3_600_000
const sha = (s: string) => createHash("sha256").update(s).digest("hex")

/** Frame seq of a meter: received seq hours after Y, its content hash from (meter, seq, variant). */
const entry = (meterId: string, seq: number, variant = ""): LedgerEntry => ({
  meterId,
  boot: 3,
  seq,
  kind: "readings",
  at: new Date(Y + seq * HOUR),
  sha256: sha(`${meterId}/${seq}${variant}`),
})

const claim = (store: Store, frames: LedgerEntry[]): Promise<FrameOutcome[]> =>
  store.ingestBatch((tx) => tx.claimFrames(frames))

/** Claims seqs in batches of 1,000, as ingest does; each must be new. */
async function seed(store: Store, meterId: string, seqs: number[]) {
  for (let i = 0; i < seqs.length; i += 1000) {
    const out = await claim(
      store,
      seqs.slice(i, i + 1000).map((s) => entry(meterId, s)),
    )
    expect(out.every((o) => o.kind === "stored")).toBe(true)
  }
}

/** The ledger's ids of a meter: each (boot, seq) once, and where it is. */
async function ids(store: Store, meterId: string) {
  const all = await ledgerFrameIds((store as SqlStore).db, [meterId])
  const keys = all.map((k) => `${k.boot}/${k.seq}`)
  expect(new Set(keys).size, "an id in the ledger twice").toBe(keys.length)
  return { seqs: all.map((k) => k.seq).sort((a, b) => a - b), rows: all.filter((k) => k.in === "rows").length }
}

const range = (lo: number, hi: number) => Array.from({ length: hi - lo + 1 }, (_, i) => lo + i)

export function ledgerContract(getStore: () => Store) {
  test("compacted ledger: a replay of last year's frame is a duplicate, other content a conflict, nothing stored twice", async () => {
    const store = getStore()
    const m = uid("lc")
    // a year of hourly frames would be 8,760; three blocks and a gap (seqs 300-304) are enough here
    const seqs = range(1, 700).filter((s) => s < 300 || s > 304)
    await seed(store, m, seqs.slice(1))
    // seq 1 with its readings, so a replay that were stored again would show twice
    const f1 = entry(m, 1)
    const row = readingRow(m, new Date(Y), { seq: 1, volumeMl: 5, waterTotalMl: 5 })
    expect((await insertReadings(store, f1, [{ ...row, boot: 3 }], f1.at)).kind).toBe("stored")

    const done = await store.compactLedger(CUT)
    expect(done.frames).toBeGreaterThanOrEqual(seqs.length)
    const after = await ids(store, m)
    expect(after).toEqual({ seqs, rows: 0 })

    // a replay with the same content: a duplicate, its readings not written again
    expect((await insertReadings(store, f1, [{ ...row, boot: 3 }], new Date())).kind).toBe("duplicate")
    expect(await store.readings(m)).toHaveLength(1)
    // same id, other content: a conflict, answered with the prefix of the hash the block keeps
    const other = entry(m, 1, "other")
    expect(await insertReadings(store, other, [{ ...row, boot: 3, volumeMl: 999 }], new Date())).toEqual({
      kind: "conflict",
      storedSha256: f1.sha256!.slice(0, 16),
    })
    expect((await store.readings(m)).map((r) => r.volumeMl)).toEqual([5])
    // in one batch, as ingest claims: a replay, the same id with other content, a new frame twice
    expect(await claim(store, [entry(m, 500), entry(m, 500, "x"), entry(m, 701), entry(m, 701)])).toEqual([
      { kind: "duplicate" },
      { kind: "conflict", storedSha256: entry(m, 500).sha256!.slice(0, 16) },
      { kind: "stored" },
      { kind: "duplicate" },
    ])
    // another boot is another frame
    expect(await claim(store, [{ ...entry(m, 5), boot: 4 }])).toEqual([{ kind: "stored" }])
    expect((await ids(store, m)).seqs).toHaveLength(seqs.length + 2)
    // every id of last year in blocks: the next tests start from a compacted ledger
    await store.compactLedger(CUT)
    expect(await ids(store, m)).toMatchObject({ rows: 0 })
  })

  test("compacted ledger: a late frame into a gap is stored once, before and after the gap is compacted; compacting again is a no-op", async () => {
    const store = getStore()
    const db = (store as SqlStore).db
    const m = uid("lg")
    const seqs = range(1, 2 * BLOCK_SEQS + 10).filter((s) => s % 50 !== 7)
    await seed(store, m, seqs)
    await store.compactLedger(CUT, { meterIds: [m] })
    const blocks = async () =>
      (
        await db.query<{ h: string }>(
          `SELECT boot || '/' || block || '/' || encode(hashes, 'hex') AS h FROM frame_blocks WHERE meter_id = $1 ORDER BY block`,
          [m],
        )
      ).rows.map((r) => r.h)
    const before = await blocks()
    expect(before).toHaveLength(3)
    // compacting again moves nothing and changes no block
    expect(await store.compactLedger(CUT, { meterIds: [m] })).toEqual({ frames: 0, blocks: 0, transactions: 0 })
    expect(await store.compactLedger(CUT)).toMatchObject({ frames: 0 })
    expect(await blocks()).toEqual(before)

    // late frames into gaps (seq 57, and 7 and 257 in two other blocks), some in one batch with a replay
    expect(await claim(store, [entry(m, 57)])).toEqual([{ kind: "stored" }])
    expect(await claim(store, [entry(m, 57), entry(m, 7), entry(m, 8), entry(m, 257)])).toEqual([
      { kind: "duplicate" },
      { kind: "stored" },
      { kind: "duplicate" },
      { kind: "stored" },
    ])
    expect(await ids(store, m)).toMatchObject({ rows: 3 })
    // the late rows merge into their blocks; the blocks' other slots stay as they were
    expect(await store.compactLedger(CUT, { meterIds: [m] })).toEqual({ frames: 3, blocks: 2, transactions: 1 })
    const merged = await ids(store, m)
    expect(merged).toEqual({ seqs: [...seqs, 7, 57, 257].sort((a, b) => a - b), rows: 0 })
    expect(await claim(store, [entry(m, 57), entry(m, 257, "x"), entry(m, 107)])).toEqual([
      { kind: "duplicate" },
      { kind: "conflict", storedSha256: entry(m, 257).sha256!.slice(0, 16) },
      { kind: "stored" },
    ])
    // a frame stored without a content hash: any replay of it is a duplicate, rows or block
    const bare = { ...entry(m, 157), sha256: undefined }
    expect(await claim(store, [bare])).toEqual([{ kind: "stored" }])
    await store.compactLedger(CUT, { meterIds: [m] })
    expect(await claim(store, [entry(m, 157, "any")])).toEqual([{ kind: "duplicate" }])
  })

  test("compacted ledger: at most 10 bytes a frame, a tenth of its rows' size", async () => {
    const store = getStore()
    const db = (store as SqlStore).db
    const meters = [uid("ls"), uid("ls")]
    const n = 10 * BLOCK_SEQS
    const b0 = await ledgerBytes(db)
    for (const m of meters) await seed(store, m, range(BLOCK_SEQS, BLOCK_SEQS + n - 1))
    const b1 = await ledgerBytes(db)
    await store.compactLedger(CUT, { meterIds: meters })
    const b2 = await ledgerBytes(db)
    const rowBytes = b1.frames - b0.frames
    const blockBytes = b2.blocks - b1.blocks
    console.log(
      `ledger (${store.engine}): ${2 * n} frames as rows ${rowBytes} B (${(rowBytes / (2 * n)).toFixed(1)} B a frame), as blocks ${blockBytes} B (${(blockBytes / (2 * n)).toFixed(1)} B a frame)`,
    )
    expect(rowBytes / (2 * n)).toBeGreaterThan(100)
    expect(blockBytes / (2 * n)).toBeLessThanOrEqual(10)
    // the rows' pages are free for new rows once vacuumed (when no older snapshot still sees them:
    // other suites share the server, so this test does not wait for it)
    for (const m of meters) expect(await ids(store, m)).toMatchObject({ rows: 0 })
  })
}
