// The fleet-wide "latest reading per meter" call, measured: `npx tsx bench/latest.ts [meters...]`
// seeds N meters × 24 readings on each engine (testkit/fleet-seed.ts) and prints a Markdown row of
// median times: latest() rows, latestJson(), GET /readings/latest, and the DISTINCT ON scan it
// replaces. tests/store/latest.test.ts asserts the call's correctness and query plan.
import { randomBytes } from "node:crypto"
import { buildApp } from "../bridge/src/api.js"
import { createMetrics } from "../bridge/src/metrics.js"
import { openPglite, openPostgres } from "../bridge/src/store/engines.js"
import type { SqlStore } from "../bridge/src/store/sql-store.js"
import { seedFleet } from "../testkit/fleet-seed.js"
import { PG_URL } from "../testkit/services.js"

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

async function time(runs: number, fn: () => Promise<unknown>) {
  const ms: number[] = []
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now()
    await fn()
    ms.push(performance.now() - t0)
  }
  return median(ms)
}

async function measure(engine: "postgres" | "pglite", meters: number, perMeter: number) {
  const schema = `bench_${randomBytes(4).toString("hex")}`
  const store = engine === "postgres" ? await openPostgres(PG_URL, { schema }) : await openPglite(undefined)
  try {
    const t0 = performance.now()
    await seedFleet(store, meters, perMeter)
    const seedS = (performance.now() - t0) / 1000
    const app = buildApp({ store, metrics: createMetrics() })
    const rowsMs = await time(5, () => store.latest())
    const jsonMs = await time(5, () => store.latestJson())
    const httpMs = await time(5, async () => {
      const res = await app.inject({ url: "/readings/latest" })
      if (res.json().readings.length !== meters) throw new Error("wrong row count")
    })
    // the scanning alternative, for scale: DISTINCT ON over every reading
    const scanMs = await time(3, () =>
      (store as SqlStore).db.query(
        `SELECT DISTINCT ON (meter_id) * FROM readings ORDER BY meter_id, ts DESC, boot DESC, seq DESC, idx DESC`,
      ),
    )
    await app.close()
    const row = [engine, meters, meters * perMeter, seedS.toFixed(1)]
    row.push(...[rowsMs, jsonMs, httpMs, scanMs].map((x) => x.toFixed(0)))
    console.log(`| ${row.join(" | ")} |`)
  } finally {
    if (engine === "postgres") await (store as SqlStore).db.query(`DROP SCHEMA ${schema} CASCADE`)
    await store.close()
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const sizes = process.argv.slice(2).map(Number)
  console.log(
    "| engine | meters | readings | seed s | latest() rows ms | latestJson() ms | GET /readings/latest ms | DISTINCT ON scan ms |",
  )
  console.log("|---|---|---|---|---|---|---|---|")
  for (const meters of sizes.length ? sizes : [10_000, 100_000])
    for (const engine of ["postgres", "pglite"] as const) await measure(engine, meters, 24)
}
