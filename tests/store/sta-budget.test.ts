// The cost limits of the SensorThings view (issue 21) and its filters across relations, on both
// engines (PostgreSQL in a private schema, PGlite in memory): an $expand that could build too
// much is refused before any SQL, an answer that grows past its budget stops issuing statements,
// a request within budget gets every expansion, and a condition on a Thing's properties from its
// Observations (a semi-join, sta/filter.ts) selects the right rows. Statements are counted by
// wrapping the store's readView, which is what every SensorThings statement goes through.
import { randomBytes } from "node:crypto"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { buildApp } from "../../bridge/src/api.js"
import { BRIDGE_DEFAULTS } from "../../bridge/src/defaults.js"
import { createMetrics } from "../../bridge/src/metrics.js"
import type { StaBudgets } from "../../bridge/src/sta/budget.js"
import { openStore, type StoreOptions } from "../../bridge/src/store/engines.js"
import type { SqlStore } from "../../bridge/src/store/sql-store.js"
import type { Store } from "../../bridge/src/store/store.js"
import { seedFleet } from "../../testkit/fleet-seed.js"
import { PG_URL, dropSchema } from "../helpers.js"

const METERS = 12
const PER_METER = 200
/** seedFleet fills every channel, and its meters list none: 7 Datastreams each. */
const CHANNELS = 7
const meter = (i: number) => `fleet-${String(i).padStart(6, "0")}`

type Entity = Record<string, unknown> & { "@iot.id": string }
type Body = { value: Entity[]; "@iot.count"?: number; "@iot.nextLink"?: string; error?: string; message?: string }

const ENGINES: [string, () => [string, StoreOptions]][] = [
  ["PostgreSQL", () => [PG_URL, { schema: `t_sta_budget_${randomBytes(4).toString("hex")}` }]],
  ["PGlite", () => ["pglite:memory", {}]],
]

describe.each(ENGINES)("SensorThings read budgets on %s", (_engine, where) => {
  const [url, options] = where()
  let store: Store
  /** The statements issued through readView, in order. */
  const statements: string[] = []

  beforeAll(async () => {
    store = await openStore(url, options)
    await store.migrate()
    await seedFleet(store, METERS, PER_METER)
    // 1-3 north, 4-11 south, 12 none
    await (store as SqlStore).db.query(
      `UPDATE meters SET district = CASE WHEN meter_id <= $1 THEN 'north' WHEN meter_id <= $2 THEN 'south' END`,
      [meter(3), meter(11)],
    )
    const readView = store.readView.bind(store)
    store.readView = (sql, params) => {
      statements.push(sql)
      return readView(sql, params)
    }
  }, 120_000)

  afterAll(async () => {
    await store?.close()
    if (options.schema) await dropSchema(options.schema)
  })

  const get = async (path: string, reads?: StaBudgets) => {
    const app = buildApp({ store, metrics: createMetrics(), reads })
    try {
      statements.length = 0
      const res = await app.inject({ url: `/sta/v1.1/${path.replace(/ /g, "%20").replace(/'/g, "%27")}` })
      const issued = statements.length
      // nothing keeps running once the answer is given
      await new Promise((r) => setTimeout(r, 100))
      expect(statements.length, "statements issued after the answer").toBe(issued)
      return { status: res.statusCode, body: res.json() as Body, issued }
    } finally {
      await app.close()
    }
  }

  test("the $expand bomb is refused before any SQL, with the limit, the worst case and how to ask for less", async () => {
    const { status, body, issued } = await get(
      "Things?$top=250&$filter=startswith(name,'fle')&$expand=Datastreams($expand=Observations($top=10000))",
    )
    expect(status).toBe(400)
    expect(body.error).toBe("CM_ERR_READ_BUDGET")
    expect(issued).toBe(0)
    // 250 Things, at most 7 Datastreams each, 10,000 Observations each
    expect(body.message).toContain("17,502,000 entities")
    expect(body.message).toContain(`the ${BRIDGE_DEFAULTS.reads.maxEntities.toLocaleString("en-US")} one answer`)
    expect(body.message).toMatch(/\$top=\d+ or less in \$expand=Datastreams\/Observations/)
    expect(body.message).toContain("@iot.nextLink")
    expect(body.message).toContain("$filter")
  })

  test("the $top it suggests is accepted", async () => {
    const refused = await get("Things?$top=10&$expand=Datastreams($expand=Observations($top=1000))", {
      maxEntities: 2000,
      maxBytes: BRIDGE_DEFAULTS.reads.maxBytes,
    })
    expect(refused.status).toBe(400)
    const top = /\$top=(\d+) or less/.exec(String(refused.body.message))?.[1]
    expect(Number(top)).toBeGreaterThan(0)
    const ok = await get(`Things?$top=10&$expand=Datastreams($expand=Observations($top=${top}))`, {
      maxEntities: 2000,
      maxBytes: BRIDGE_DEFAULTS.reads.maxBytes,
    })
    expect(ok.status).toBe(200)
    const tooMany = await get(`Things?$top=10&$expand=Datastreams($expand=Observations($top=${Number(top) + 1}))`, {
      maxEntities: 2000,
      maxBytes: BRIDGE_DEFAULTS.reads.maxBytes,
    })
    expect(tooMany.status).toBe(400)
  })

  test("$expand deeper than 4 levels is refused", async () => {
    const deep = await get("Things?$top=1&$expand=Datastreams/Thing/Datastreams/Thing/Datastreams")
    expect(deep.status).toBe(400)
    expect(deep.body.error).toBe("CM_ERR_READ_BUDGET")
    expect(deep.body.message).toContain("5 levels deep, more than 4")
    expect(deep.issued).toBe(0)
    expect((await get("Things?$top=1&$expand=Datastreams/Thing/Datastreams/Thing")).status).toBe(200)
  })

  test("a request within budget gets every expansion, one statement per parent and relation", async () => {
    const { status, body, issued } = await get("Things?$top=3&$expand=Datastreams($expand=Observations($top=5))")
    expect(status).toBe(200)
    expect(body.value.map((t) => t["@iot.id"])).toEqual([meter(1), meter(2), meter(3)])
    for (const thing of body.value) {
      const datastreams = thing.Datastreams as Entity[]
      expect(datastreams).toHaveLength(CHANNELS)
      for (const d of datastreams) {
        expect(d.Observations as Entity[]).toHaveLength(5)
        expect(d["Observations@iot.nextLink"]).toContain("$top=5")
      }
    }
    // the page, 3 × Datastreams, 21 × Observations
    expect(issued).toBe(1 + 3 + 3 * CHANNELS)
  })

  test("collections without $top get a page that fits, with @iot.nextLink", async () => {
    const reads = { maxEntities: 600, maxBytes: BRIDGE_DEFAULTS.reads.maxBytes }
    const { status, body } = await get("Things?$expand=Datastreams/Observations", reads)
    expect(status).toBe(200)
    const things = body.value
    const datastreams = things.flatMap((t) => t.Datastreams as Entity[])
    const observations = datastreams.flatMap((d) => d.Observations as Entity[])
    expect(things.length + datastreams.length + observations.length).toBeLessThanOrEqual(reads.maxEntities)
    // the same page size at every level without $top: n + 7n + 7n² ≤ 600 at n = 8
    expect(things).toHaveLength(8)
    expect(datastreams[0].Observations as Entity[]).toHaveLength(8)
    expect(body["@iot.nextLink"]).toContain("$top=8")
    expect(datastreams[0]["Observations@iot.nextLink"]).toContain("$top=8")
  })

  test("the answer stops at its byte budget, and so do its statements", async () => {
    const path = "Things?$top=12&$expand=Datastreams($expand=Observations($top=50))"
    const whole = await get(path)
    expect(whole.status).toBe(200)
    expect(whole.issued).toBe(1 + METERS + METERS * CHANNELS)
    const bytes = JSON.stringify(whole.body).length
    const { status, body, issued } = await get(path, {
      maxEntities: BRIDGE_DEFAULTS.reads.maxEntities,
      maxBytes: Math.floor(bytes / 20),
    })
    expect(status).toBe(400)
    expect(body.error).toBe("CM_ERR_READ_BUDGET")
    expect(body.message).toContain(`more than the ${Math.floor(bytes / 20).toLocaleString("en-US")} bytes`)
    expect(body.message).toContain("@iot.nextLink")
    // a twentieth of the answer: about a twentieth of its statements
    expect(issued).toBeLessThan(whole.issued / 10)
  })

  test("$ref links count as entities", async () => {
    const refs = await get("Observations/$ref?$top=500", { maxEntities: 1000, maxBytes: 2000 })
    expect(refs.status).toBe(400)
    expect(refs.body.error).toBe("CM_ERR_READ_BUDGET")
  })

  describe("a condition on the Thing of an Observation", () => {
    const count = async (filter: string) => {
      const { status, body } = await get(`Observations?$count=true&$top=0&$filter=${filter}`)
      expect(status, JSON.stringify(body)).toBe(200)
      return body["@iot.count"]
    }
    const each = PER_METER * CHANNELS

    test("selects the Observations of the district's meters", async () => {
      const { status, body } = await get(
        "Observations?$top=10000&$filter=Datastream/Thing/properties/district eq 'north'&$orderby=phenomenonTime desc",
      )
      expect(status).toBe(200)
      expect(body.value).toHaveLength(3 * each)
      expect(new Set(body.value.map((o) => o["@iot.id"].split(":")[0]))).toEqual(
        new Set([meter(1), meter(2), meter(3)]),
      )
      // read as a semi-join: the district's meters once, not a subquery per Observation
      expect(statements.find((s) => s.includes("ORDER BY"))).toContain("= ANY (ARRAY(SELECT")
      expect(await count("Datastream/Thing/properties/district eq 'north'")).toBe(3 * each)
      expect(await count("FeatureOfInterest/properties/district eq 'south'")).toBe(8 * each)
      expect(await count("Datastream/Thing/properties/district eq 'x'")).toBe(0)
      expect(
        await count("Datastream/Thing/properties/district eq 'north' and Datastream/Thing/id eq 'fleet-000002'"),
      ).toBe(each)
      expect(
        await count("Datastream/Thing/properties/district eq 'north' or Datastream/id eq 'fleet-000012:water'"),
      ).toBe(3 * each + PER_METER)
    })

    test("keeps SQL's null semantics where a semi-join would not (not, eq null)", async () => {
      // meter 12 has no district: neither north nor not north
      expect(await count("not (Datastream/Thing/properties/district eq 'north')")).toBe(8 * each)
      expect(await count("Datastream/Thing/properties/district eq null")).toBe(each)
      expect(await count("Datastream/Thing/properties/district ne 'north'")).toBe(8 * each)
    })
  })
})
