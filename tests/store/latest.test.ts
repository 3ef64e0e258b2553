// The fleet-wide "latest reading per meter" call at 10k meters on both engines: one row per meter,
// the newest, read from meter_latest without touching readings (the query plan says so).
import { randomBytes } from "node:crypto"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { buildApp } from "../../bridge/src/api.js"
import { createMetrics } from "../../bridge/src/metrics.js"
import { openPglite, openPostgres } from "../../bridge/src/store/engines.js"
import type { Store } from "../../bridge/src/store/store.js"
import { PG_URL, dropSchema } from "../helpers.js"
import { latestPlanTables, seedFleet } from "../../testkit/fleet-seed.js"

const METERS = 10_000
const PER_METER = 8

describe.each(["postgres", "pglite"] as const)("fleet-wide latest on %s", (engine) => {
  let store: Store
  const schema = `t_${randomBytes(6).toString("hex")}`
  beforeAll(async () => {
    store = engine === "postgres" ? await openPostgres(PG_URL, { schema }) : await openPglite(undefined)
    await seedFleet(store, METERS, PER_METER)
  })
  afterAll(async () => {
    await store?.close()
    if (engine === "postgres") await dropSchema(schema)
  })

  test(`${METERS} meters: one newest row each, in one call, without scanning readings`, async () => {
    const app = buildApp({ store, metrics: createMetrics() })
    const t0 = performance.now()
    const res = await app.inject({ url: "/readings/latest" })
    const ms = performance.now() - t0
    const rows = res.json().readings as { meterId: string; seq: number; idx: number; waterTotalMl: number }[]
    console.log(`latest on ${engine}: ${METERS} meters × ${PER_METER} readings in ${ms.toFixed(0)} ms`)
    expect(rows).toHaveLength(METERS)
    expect(new Set(rows.map((r) => r.meterId)).size).toBe(METERS)
    for (const r of rows) expect([r.seq, r.idx, r.waterTotalMl]).toEqual([2, 3, 10 * PER_METER])
    expect(res.json().next).toBeNull()
    const plan = await latestPlanTables(store)
    expect(plan).toContain("meter_latest")
    expect(plan).not.toMatch(/\breadings\b/)
    await app.close()
  })
})
