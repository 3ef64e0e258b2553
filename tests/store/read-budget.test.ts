// Reads under their time budget on both engines, and expensive reads behind a gate. PostgreSQL
// reads run in a pool of their own with statement_timeout; PGlite has no working statement_timeout,
// so its thread is stopped at the budget and the directory reopened (store/pglite-thread.ts). Either
// way the reader gets 400 CM_ERR_READ_BUDGET, and ingest's writes go on and are all kept.
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { randomBytes } from "node:crypto"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { buildApp } from "../../bridge/src/api.js"
import { createMetrics } from "../../bridge/src/metrics.js"
import { openStore } from "../../bridge/src/store/engines.js"
import type { SqlStore } from "../../bridge/src/store/sql-store.js"
import type { Store } from "../../bridge/src/store/store.js"
import { seedFleet } from "../../testkit/fleet-seed.js"
import { PG_URL, dropSchema } from "../helpers.js"

const STATEMENT_MS = 300
/** A statement that runs for seconds on either engine, and that the planner costs as nothing. */
const SLOW = `SELECT pg_sleep(30)`

describe.each(["postgres", "pglite"] as const)("read budgets on %s", (engine) => {
  let store: Store
  const schema = `t_${randomBytes(6).toString("hex")}`
  beforeAll(async () => {
    const reads = { statementMs: STATEMENT_MS, concurrency: 2 }
    store =
      engine === "postgres"
        ? await openStore(PG_URL, { schema, reads })
        : await openStore(`pglite:${join(mkdtempSync(join(tmpdir(), "cm-reads-")), "db")}`, { reads })
    await seedFleet(store, 20, 96)
  }, 60_000)
  afterAll(async () => {
    await store?.close()
    if (engine === "postgres") await dropSchema(schema)
  })

  const count = async () =>
    Number((await (store as SqlStore).db.query<{ n: number }>(`SELECT count(*) AS n FROM meters`)).rows[0].n)

  test("a read past READ_STATEMENT_MS stops with 57014; a write asked for meanwhile commits; nothing is lost", async () => {
    const before = await count()
    const t0 = performance.now()
    const read = store.readView(SLOW, []).then(
      () => "finished",
      (e: { code?: string }) => e.code,
    )
    // a write queued behind the read (PGlite: the same connection) or beside it (PostgreSQL)
    const write = store.registerMeter(`late-${engine}`, new Date())
    expect(await read).toBe("57014")
    const readMs = performance.now() - t0
    await write
    expect(readMs).toBeGreaterThanOrEqual(STATEMENT_MS - 5)
    expect(await count()).toBe(before + 1)
    // the reopened engine answers reads and keeps the seed
    expect((await store.readView(`SELECT count(*)::int AS n FROM readings`, []))[0].n).toBe(20 * 96)
  })

  test("ingest's own statements have no such limit", async () => {
    const rows = (
      await (store as SqlStore).db.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM generate_series(1, 3000000) g, pg_sleep(0) WHERE g % 7 = 3`,
      )
    ).rows
    expect(rows[0].n).toBe(428572)
  })

  test("the API answers a read past its time 400 CM_ERR_READ_BUDGET, naming the limit", async () => {
    const app = buildApp({ store, metrics: createMetrics() })
    // every Observation's result turned to text and matched: a scan the indexes cannot shorten
    const slowView = store.readView.bind(store)
    store.readView = () => slowView(SLOW, [])
    try {
      const res = await app.inject({ url: "/sta/v1.1/Observations?$top=1" })
      expect(res.statusCode).toBe(400)
      expect(res.json().error).toBe("CM_ERR_READ_BUDGET")
      expect(res.json().message).toMatch(/READ_STATEMENT_MS/)
    } finally {
      store.readView = slowView
      await app.close()
    }
    const ok = await buildApp({ store, metrics: createMetrics() }).inject({ url: "/sta/v1.1/Things?$top=2" })
    expect(ok.statusCode).toBe(200)
    expect(ok.json().value).toHaveLength(2)
  })
})

describe("read gates", () => {
  let store: Store
  beforeAll(async () => {
    store = await openStore("pglite:memory")
    await seedFleet(store, 5, 8)
  })
  afterAll(() => store?.close())

  test("past its concurrency and queue, an expensive read is shed with 503 CM_ERR_BUSY and Retry-After; cheap routes are not gated", async () => {
    const metrics = createMetrics()
    const app = buildApp({ store, metrics, reads: { concurrency: 1, queue: 1 } })
    let release!: () => void
    const held = new Promise<void>((r) => (release = r))
    const real = store.readView.bind(store)
    let entered = 0
    store.readView = async (sql, params) => {
      entered++
      await held
      return real(sql, params)
    }
    try {
      const first = app.inject({ url: "/sta/v1.1/Things?$top=1" })
      const second = app.inject({ url: "/sta/v1.1/Things?$top=1" })
      await new Promise((r) => setTimeout(r, 100))
      const third = await app.inject({ url: "/sta/v1.1/Things?$top=1" })
      expect(third.statusCode).toBe(503)
      expect(third.json().error).toBe("CM_ERR_BUSY")
      expect(third.headers["retry-after"]).toBe("5")
      expect(entered).toBe(1) // the second waits for its turn without touching the data tier
      const health = await app.inject({ url: "/healthz" })
      expect(health.statusCode).toBe(200)
      release()
      expect((await first).statusCode).toBe(200)
      expect((await second).statusCode).toBe(200)
      expect((await app.inject({ url: "/sta/v1.1/Things?$top=1" })).statusCode).toBe(200)
      expect(await metrics.registry.getSingleMetricAsString("citymeter_reads_shed_total")).toMatch(
        /citymeter_reads_shed_total\{gate="read"\} 1/,
      )
    } finally {
      store.readView = real
      await app.close()
    }
  })
})

describe.each(["postgres", "pglite"] as const)("the read cost limit on %s", (engine) => {
  let store: Store
  const schema = `t_${randomBytes(6).toString("hex")}`
  beforeAll(async () => {
    store =
      engine === "postgres"
        ? await openStore(PG_URL, { schema, reads: { maxCost: 5000 } })
        : await openStore("pglite:memory", { reads: { maxCost: 5000 } })
    await seedFleet(store, 50, 960)
  }, 60_000)
  afterAll(async () => {
    await store?.close()
    if (engine === "postgres") await dropSchema(schema)
  })

  test("a SensorThings read the planner costs over READ_MAX_COST is refused unrun with 400 naming the estimate; a paged one runs", async () => {
    const app = buildApp({ store, metrics: createMetrics() })
    const real = store.readView.bind(store)
    let ran = 0
    store.readView = async (sql, params) => {
      ran++
      return real(sql, params)
    }
    try {
      // a sort of every Observation: a full scan the planner foresees
      const full = await app.inject({ url: "/sta/v1.1/Observations?$orderby=result%20desc&$top=1000" })
      expect(full.statusCode, full.body).toBe(400)
      expect(full.json().error).toBe("CM_ERR_READ_BUDGET")
      expect(full.json().message).toMatch(/estimates this read at [\d,]+, over READ_MAX_COST 5,000/)
      expect(ran).toBe(1) // refused on its plan: (store.readView was asked, the statement never ran)
      const paged = await app.inject({
        url: "/sta/v1.1/Datastreams('fleet-000001:water')/Observations?$top=10",
      })
      expect(paged.statusCode, paged.body).toBe(200)
      expect(paged.json().value).toHaveLength(10)
    } finally {
      store.readView = real
      await app.close()
    }
  })
})
