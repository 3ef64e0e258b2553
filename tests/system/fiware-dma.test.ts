// A DMA as a FIWARE WaterNetwork entity (issue 25 item 7, docs/fiware-dma.md), on both stacks:
// GET /ngsi-ld/v1/entities/urn:ngsi-ld:WaterNetwork:<id> and Query Entities by type answer the
// DMA's name, boundary and sub-DMAs, and the balance of its last whole UTC day as citymeter's own
// attributes (m³, fractions), equal to GET /dmas/:id/balance's; the keyValues form validates
// against the vendored WaterNetwork schema (vendor/smart-data-models, offline).
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { WATER_NETWORK_CONTEXT } from "../../bridge/src/fiware-dma.js"
import { insertReadings } from "../../testkit/store-writes.js"
import { modelValidators, publishedExample } from "../fiware-schemas.js"
import { STACKS, startStack, uid, type TestStack } from "../helpers.js"
import { hours, type Flow } from "../store-contract-dmas.js"

const OPS = "fiware-dma-ops"
const HOUR = 3_600_000
const DAY = 24 * HOUR
const today = Math.floor(Date.now() / DAY) * DAY
const LEAK = 125_000

describe("the vendored WaterNetwork schema", () => {
  const v = modelValidators()
  test("accepts the model's published example and refuses a broken one (the control)", () => {
    expect(v.WaterNetwork(publishedExample("WaterNetwork")), JSON.stringify(v.WaterNetwork.errors)).toBe(true)
    expect(v.WaterNetwork({ ...publishedExample("WaterNetwork"), type: "Network" })).toBe(false)
    expect(v.WaterNetwork({ ...publishedExample("WaterNetwork"), location: { type: "Polygon", coordinates: 1 } })).toBe(
      false,
    )
  })
})

describe.each(STACKS)("DMAs as WaterNetwork entities: %s", (kind) => {
  let svc: TestStack
  const v = modelValidators()
  const id = uid("fwd").replace(/[^A-Za-z0-9-]/g, "")
  const sub = `${id}-sub`
  const customer: Flow = { meterId: uid("fwd-c"), fwd: () => 40_000, total: 0, seq: 1 }
  const inflow: Flow = { meterId: uid("fwd-in"), fwd: () => 40_000 + LEAK, total: 0, seq: 1 }
  const square = [
    [7, 45],
    [7.01, 45],
    [7.01, 45.01],
    [7, 45.01],
    [7, 45],
  ]
  const get = (url: string, accept?: string) => svc.app.inject({ url, headers: accept ? { accept } : {} })
  const E = `/ngsi-ld/v1/entities/urn:ngsi-ld:WaterNetwork:${id}`

  beforeAll(async () => {
    svc = await startStack(kind, { httpPort: 0, apiTokens: { ops: OPS } })
    for (const f of [customer, inflow]) await svc.store.registerMeter(f.meterId, new Date(today - DAY))
    const headers = { authorization: `Bearer ${OPS}` }
    for (const [dmaId, body] of [
      [
        id,
        {
          name: "North",
          boundary: { type: "Polygon", coordinates: [square] },
          inflow: [inflow.meterId],
          customers: [customer.meterId],
        },
      ],
      [sub, { name: "North, upper", parentId: id }],
    ] as const) {
      const put = await svc.app.inject({ method: "PUT", url: `/dmas/${dmaId}`, payload: body, headers })
      expect(put.statusCode, put.body).toBe(201)
    }
    for (const f of [customer, inflow]) {
      const claim = await insertReadings(
        svc.store,
        { meterId: f.meterId, boot: 1, seq: f.seq++ },
        hours(f, today - DAY, today),
        new Date(),
      )
      expect(claim.kind).toBe("stored")
    }
  }, 180_000)
  afterAll(async () => {
    await svc?.stop()
  })

  test("a DMA's entity: name, boundary, sub-DMAs and yesterday's balance; keyValues valid against the schema", async () => {
    const q = `bucket=day&from=${new Date(today - DAY).toISOString()}&to=${new Date(today).toISOString()}`
    const [b] = (await get(`/dmas/${id}/balance?${q}`)).json().balance as Record<string, number | boolean>[]
    expect(b.provisional).toBe(false)

    const kvRes = await get(`${E}?options=keyValues`)
    expect(kvRes.statusCode, kvRes.body).toBe(200)
    expect(kvRes.headers.link).toBe(
      `<${WATER_NETWORK_CONTEXT}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"`,
    )
    const kv = kvRes.json() as Record<string, unknown>
    expect(v.WaterNetwork(kv), JSON.stringify(v.WaterNetwork.errors)).toBe(true)
    expect(kv).toEqual({
      id: `urn:ngsi-ld:WaterNetwork:${id}`,
      type: "WaterNetwork",
      name: "North",
      location: { type: "Polygon", coordinates: [square] },
      hasSubNetwork: [`urn:ngsi-ld:WaterNetwork:${sub}`],
      systemInputVolume: (b.systemInputMl as number) / 1e6,
      billedMeteredConsumption: (b.billedMl as number) / 1e6,
      waterLosses: (24 * LEAK) / 1e6,
      nonRevenueWaterShare: b.nrwShare,
      balanceCoverage: 1,
      balanceProvisional: false,
    })

    const n = (await get(E)).json() as Record<string, Record<string, unknown>>
    expect(n.waterLosses).toEqual({
      type: "Property",
      value: 3,
      unitCode: "MTQ",
      observedAt: new Date(today).toISOString(),
    })
    expect(n.hasSubNetwork).toEqual({ type: "Relationship", object: [`urn:ngsi-ld:WaterNetwork:${sub}`] })
    expect(n.location).toEqual({ type: "GeoProperty", value: { type: "Polygon", coordinates: [square] } })

    const ld = (await get(`${E}?options=keyValues`, "application/ld+json")).json() as Record<string, unknown>
    expect(ld["@context"]).toEqual([
      WATER_NETWORK_CONTEXT,
      "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
    ])
    expect((await get(`/ngsi-ld/v1/entities/urn:ngsi-ld:WaterNetwork:${id}-none`)).statusCode).toBe(404)
  })

  test("Query Entities by type WaterNetwork: every DMA, each valid; by id; with attrs", async () => {
    const res = await get(`/ngsi-ld/v1/entities?type=WaterNetwork&options=keyValues&limit=1000&count=true`)
    expect(res.statusCode, res.body).toBe(200)
    const list = res.json() as Record<string, unknown>[]
    const mine = list.filter((e) => [id, sub].some((d) => e.id === `urn:ngsi-ld:WaterNetwork:${d}`))
    expect(mine.map((e) => e.name)).toEqual(["North", "North, upper"])
    for (const e of list) expect(v.WaterNetwork(e), JSON.stringify(v.WaterNetwork.errors)).toBe(true)
    expect(Number(res.headers["ngsild-results-count"])).toBe(list.length)
    // the sub-DMA has no meters: nothing covered, provisional, no share
    expect(mine[1]).toMatchObject({ balanceCoverage: 0, balanceProvisional: true })
    expect(mine[1]).not.toHaveProperty("nonRevenueWaterShare")

    const byId = await get(
      `/ngsi-ld/v1/entities?id=urn:ngsi-ld:WaterNetwork:${sub}&options=keyValues&attrs=name,hasSubNetwork`,
    )
    expect(byId.json()).toEqual([{ id: `urn:ngsi-ld:WaterNetwork:${sub}`, type: "WaterNetwork", name: "North, upper" }])
  })
})
