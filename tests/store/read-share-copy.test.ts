// A COPY's data on a reads session (the export's one statement per file, store/export-rows.ts)
// takes its share of the time while ingest keeps the data tier busy (store/read-share.ts): the
// stream pauses between slices, and TCP back-pressure holds the engine once the socket's buffers
// are full. 100 MB of rows: far more than those buffers hold.
import { randomBytes } from "node:crypto"
import { afterAll, beforeAll, expect, test } from "vitest"
import { openPostgres } from "../../bridge/src/store/engines.js"
import type { SqlStore } from "../../bridge/src/store/sql-store.js"
import { dropSchema, PG_URL } from "../helpers.js"

const schema = `t_${randomBytes(6).toString("hex")}`
let store: SqlStore
beforeAll(async () => {
  store = (await openPostgres(PG_URL, { schema })) as SqlStore
})
afterAll(async () => {
  await store?.close()
  await dropSchema(schema)
})

/** ms from the first chunk to the end of a COPY of 100 MB, and its bytes. */
async function copy() {
  const s = await store.db.reads!.session!()
  try {
    await s.query(`BEGIN READ ONLY`)
    await s.query(`SET LOCAL statement_timeout = 0`)
    let bytes = 0
    let first = 0
    for await (const c of s.copyOut!(`COPY (SELECT g, repeat('x', 90) FROM generate_series(1, 1000000) g) TO STDOUT`)) {
      first ||= performance.now()
      bytes += (c as Buffer).length
    }
    await s.query(`COMMIT`)
    return { ms: performance.now() - first, bytes }
  } finally {
    s.release()
  }
}

test("while ingest keeps the data tier busy, a COPY on a reads session gets its share of the time", async () => {
  const quiet = await copy()
  // ingest's connection busy all the time (its statements are timed), for 1.5 s before and throughout
  let busy = true
  const ingest = (async () => {
    while (busy) await store.db.query(`SELECT pg_sleep(0.05)`)
  })()
  await new Promise((r) => setTimeout(r, 1500))
  const shared = await copy().finally(() => (busy = false))
  await ingest
  expect(shared.bytes).toBe(quiet.bytes)
  expect(quiet.bytes).toBeGreaterThan(95_000_000)
  // READ_SHARE_PCT 25: ≈ 4 × the time alone; 2 × leaves room for a noisy machine
  expect(shared.ms).toBeGreaterThan(2 * quiet.ms)
})
