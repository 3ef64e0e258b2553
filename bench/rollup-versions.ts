// Row versions the rollups leave per ingest batch (issue 24 item 3), opt-in, not CI:
// `npx tsx bench/rollup-versions.ts [meters] [batches]` (default 100 meters, 96 batches: one day
// of 15-minute readings, every meter's reading in each batch, time-major as a city's arrive).
// Loads into a private schema of PostgreSQL (autovacuum off on the test server), closes the store
// (its backends report their counts on exit), then prints pg_stat_user_tables per rollup table
// per batch. STORE=<path of another checkout's bridge/src/store/engines.ts> measures that code
// (for a before/after from one script).
import { randomBytes } from "node:crypto"
import { resolve } from "node:path"
import pg from "pg"
import type * as Engines from "../bridge/src/store/engines.js"
import type { ReadingRow } from "../bridge/src/store/store.js"
import { readingRow } from "../testkit/rows.js"

const URL = process.env.DATABASE_URL ?? "postgres://root@127.0.0.1:5432/test"
const METERS = Number(process.argv[2] ?? 100)
const BATCHES = Number(process.argv[3] ?? 96)
const Y0 = Date.parse("2025-01-01T00:00:00Z")
const STEP = 900_000
const { openPostgres } = (await import(
  process.env.STORE ? resolve(process.env.STORE) : "../bridge/src/store/engines.js"
)) as typeof Engines

const schema = `bench_${randomBytes(4).toString("hex")}`
const store = await openPostgres(URL, { schema })
const ids = [...Array(METERS).keys()].map((i) => `v-${String(i).padStart(5, "0")}`)
const c = new pg.Client({ connectionString: URL })
await c.connect()
try {
  await store.ingestBatch(async (tx) => {
    await tx.touchMeters(ids.map((m) => ({ meterId: m, firstAt: new Date(Y0), lastAt: new Date(Y0) })))
  })
  for (const [i, m] of ids.entries())
    await store.setLocation(m, { lat: 52, lon: 13, address: null, district: `d${i % 10}` })
  const t0 = performance.now()
  for (let b = 0; b < BATCHES; b++) {
    const rows: ReadingRow[] = ids.map((m) =>
      readingRow(m, new Date(Y0 + b * STEP), {
        seq: b + 1,
        volumeMl: 10,
        reverseMl: 0,
        waterTotalMl: 10 * (b + 1),
        energyWh: 1,
        energyTotalWh: b + 1,
      }),
    )
    await store.ingestBatch(async (tx) => {
      await tx.claimFrames(ids.map((m) => ({ meterId: m, boot: 1, seq: b + 1, kind: "readings", at: new Date(Y0) })))
      await tx.writeReadings(rows)
    })
  }
  const loadMs = performance.now() - t0
  await store.close()
  await new Promise((r) => setTimeout(r, 1500))
  const { rows } = await c.query(
    `SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_dead_tup, pg_total_relation_size(relid) AS bytes
     FROM pg_stat_user_tables WHERE schemaname = $1 AND relname LIKE 'rollup%' ORDER BY relname`,
    [schema],
  )
  const per = (n: string) => +(Number(n) / BATCHES).toFixed(1)
  console.log(
    JSON.stringify(
      {
        store: process.env.STORE ?? "this checkout",
        meters: METERS,
        batches: BATCHES,
        msPerBatch: +(loadMs / BATCHES).toFixed(1),
        perBatch: Object.fromEntries(
          rows.map((r) => [
            r.relname,
            {
              inserted: per(r.n_tup_ins),
              updated: per(r.n_tup_upd),
              hot: per(r.n_tup_hot_upd),
              dead: per(r.n_dead_tup),
            },
          ]),
        ),
        bytes: Object.fromEntries(rows.map((r) => [r.relname, Number(r.bytes)])),
      },
      null,
      2,
    ),
  )
} finally {
  await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
  await c.end()
}
