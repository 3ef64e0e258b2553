// The frame ledger over a year, before and after compaction (issue 24 item 2), opt-in, not CI:
// `npm run bench:ledger -- [meters] [--pglite]` (default 50 meters, PostgreSQL and PGlite in
// memory; --pglite: PGlite only). A year of frames is claimed as bench/year.ts claims it (hourly
// 4-interval frames, time-major, 1,000 frames a batch through IngestTx.claimFrames); then:
// - bytes per meter-year of the ledger (pg_total_relation_size of frames and frame_blocks) as rows,
//   and after compactLedger into blocks (the emptied frames table rewritten by VACUUM FULL: its
//   freed pages would otherwise be counted, though new rows reuse them);
// - compaction's rate (frames moved per second) and transactions;
// - claims per second of the next year's frames (all new) and of replays of last year's
//   (duplicates), against the ledger as rows and then compacted, the same frames each time: the
//   claim path's cost of looking into the blocks. The baseline is the ledger as rows.
import { createHash, randomBytes } from "node:crypto"
import { openPglite, openPostgres } from "../bridge/src/store/engines.js"
import { ledgerBytes } from "../bridge/src/store/ledger-blocks.js"
import type { SqlStore } from "../bridge/src/store/sql-store.js"
import type { LedgerEntry, Store } from "../bridge/src/store/store.js"
import { PG_URL, dropSchema } from "../testkit/services.js"

const args = process.argv.slice(2)
const METERS = Number(args.find((a) => /^\d+$/.test(a)) ?? 50)
const Y0 = Date.parse("2025-01-01T00:00:00Z")
const STEP = 900_000
const PER_YEAR = 365 * 96
const FRAME = 4
const FRAMES_PER_YEAR = PER_YEAR / FRAME
const BATCH_FRAMES = 1000
const sha = (key: string) => createHash("sha256").update(key).digest("hex")

/** Year y's frames of every meter in claim batches, time-major as bench/year.ts sends them. */
function* yearBatches(ids: string[], year: number): Generator<LedgerEntry[]> {
  const perMeter = Math.max(1, Math.floor(BATCH_FRAMES / ids.length))
  for (let f = 0; f < FRAMES_PER_YEAR; f += perMeter)
    for (let lo = 0; lo < ids.length; lo += BATCH_FRAMES) {
      const batch: LedgerEntry[] = []
      for (const m of ids.slice(lo, lo + BATCH_FRAMES))
        for (let k = f; k < Math.min(FRAMES_PER_YEAR, f + perMeter); k++) {
          const seq = year * FRAMES_PER_YEAR + k + 1
          batch.push({
            meterId: m,
            boot: 1,
            seq,
            kind: "readings",
            at: new Date(Y0 + (year * PER_YEAR + k * FRAME) * STEP),
            sha256: sha(`${m}/${seq}`),
          })
        }
      yield batch
    }
}

/** Claims every batch; frames per second, and the outcomes counted. */
async function claimAll(store: Store, batches: Iterable<LedgerEntry[]>) {
  const counts = { stored: 0, duplicate: 0, conflict: 0 }
  let n = 0
  const t0 = performance.now()
  for (const b of batches) {
    const out = await store.ingestBatch((tx) => tx.claimFrames(b))
    for (const o of out) counts[o.kind]++
    n += b.length
  }
  return { rate: n / ((performance.now() - t0) / 1000), counts }
}

const fmt = (n: number) => Math.round(n).toLocaleString("en-US")

async function run(engine: string, store: Store) {
  const db = (store as SqlStore).db
  const ids = [...Array(METERS).keys()].map((i) => `l-${String(i).padStart(5, "0")}`)
  const seeded = await claimAll(store, yearBatches(ids, 0))
  await db.query(`VACUUM ANALYZE frames`)
  const rows = await ledgerBytes(db)
  // the claim path against the ledger as rows: replays of the year, then the next year (new),
  // rolled back (a batch that throws writes nothing) so that the ledger stays as it was
  const rolledBack = async (batches: Iterable<LedgerEntry[]>) => {
    const counts = { stored: 0, duplicate: 0, conflict: 0 }
    let n = 0
    const t0 = performance.now()
    for (const b of batches) {
      await store
        .ingestBatch(async (tx) => {
          for (const o of await tx.claimFrames(b)) counts[o.kind]++
          throw new RollBack()
        })
        .catch((e) => {
          if (!(e instanceof RollBack)) throw e
        })
      n += b.length
    }
    return { rate: n / ((performance.now() - t0) / 1000), counts }
  }
  const sample = (year: number) => [...yearBatches(ids, year)].filter((_, i) => i % 10 === 0)
  const replayRows = await rolledBack(sample(0))
  const newRows = await rolledBack(sample(1))
  const t0 = performance.now()
  const done = await store.compactLedger(new Date(Y0 + PER_YEAR * STEP))
  const compactS = (performance.now() - t0) / 1000
  // the rows' table is empty now: its pages (and its key's) would hold the next rows; VACUUM FULL
  // gives them back, so that what is left is the compacted year's
  await db.query(`VACUUM FULL frames`)
  await db.query(`VACUUM ANALYZE frame_blocks`)
  const blocks = await ledgerBytes(db)
  const replayBlocks = await rolledBack(sample(0))
  const newBlocks = await rolledBack(sample(1))
  if (
    replayBlocks.counts.duplicate !== replayRows.counts.duplicate ||
    newBlocks.counts.stored !== newRows.counts.stored
  )
    throw new Error(
      `outcomes differ after compaction: ${JSON.stringify({ replayRows, replayBlocks, newRows, newBlocks })}`,
    )
  const per = (b: number) => fmt(b / METERS)
  console.log(`\n## ${engine}: ${METERS} meters × a year (${fmt(FRAMES_PER_YEAR)} frames each)`)
  console.log(`claimed ${fmt(seeded.counts.stored)} frames at ${fmt(seeded.rate)} frames/s`)
  console.log(
    `ledger bytes per meter-year as rows: ${per(rows.frames + rows.blocks)} (frames ${per(rows.frames)}, frame_blocks ${per(rows.blocks)})`,
  )
  console.log(
    `compaction: ${fmt(done.frames)} frames into ${fmt(done.blocks)} blocks in ${compactS.toFixed(1)} s (${fmt(done.frames / compactS)} frames/s, ${done.transactions} transactions)`,
  )
  console.log(
    `ledger bytes per meter-year compacted: ${per(blocks.frames + blocks.blocks)} (frames ${per(blocks.frames)}, frame_blocks ${per(blocks.blocks)}); ratio ${((blocks.frames + blocks.blocks) / (rows.frames + rows.blocks)).toFixed(3)}`,
  )
  console.log(
    `claims of new frames: ${fmt(newRows.rate)} frames/s against rows, ${fmt(newBlocks.rate)} against blocks (ratio ${(newBlocks.rate / newRows.rate).toFixed(2)})`,
  )
  console.log(
    `claims of replays (duplicates): ${fmt(replayRows.rate)} frames/s against rows, ${fmt(replayBlocks.rate)} against blocks (ratio ${(replayBlocks.rate / replayRows.rate).toFixed(2)})`,
  )
}

class RollBack extends Error {}

if (!args.includes("--pglite")) {
  const schema = `bench_${randomBytes(4).toString("hex")}`
  const pg = await openPostgres(PG_URL, { schema })
  try {
    await run("PostgreSQL", pg)
  } finally {
    await pg.close()
    await dropSchema(schema)
  }
}
const lite = await openPglite(undefined)
try {
  await run("PGlite (in memory)", lite)
} finally {
  await lite.close()
}
process.exit(0)
