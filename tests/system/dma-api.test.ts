// District metered areas over HTTP and from the CLI (issue 25 items 1-3), on both stacks: a DMA is
// put by `citymeter dma put` (a separate process, the ops token, a GeoJSON boundary file) and
// refused with a boundary that is not a polygon; readings of an inflow meter
// measuring the customers plus a leak go through the store's ingest path; GET /dmas/:id/balance
// answers the leak as losses, provisional while a customer's last hour is missing and final with
// the right number once it arrives late; the night flow, every DMA's month, the OpenAPI
// description, and deletion with its conflict.
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { insertReadings } from "../../testkit/store-writes.js"
import { CITYMETER_BIN, startNode } from "../../testkit/process.js"
import { hours, type Flow } from "../store-contract-dmas.js"
import { STACKS, startStack, uid, type TestStack } from "../helpers.js"

const OPS = "dma-ops-token"
const HOUR = 3_600_000
const DAY = 24 * HOUR
const D1 = Date.parse("2035-03-01T00:00:00Z")
const LEAK = 400

describe.each(STACKS)("DMAs over HTTP and the CLI: %s", (kind) => {
  let svc: TestStack
  const dir = mkdtempSync(join(tmpdir(), "cm-dma-"))
  const id = uid("dma").replace(/[^A-Za-z0-9-]/g, "")
  const sub = `${id}-sub`
  const customers: Flow[] = [1, 2].map((i) => ({
    meterId: uid("dc"),
    fwd: (t: number) => i * 7 * ((t / HOUR) % 24 >= 6 ? 10 : 0),
    total: 0,
    seq: 1,
  }))
  const inflow: Flow = {
    meterId: uid("din"),
    fwd: (t) => customers.reduce((s, c) => s + c.fwd(t), 0) + LEAK,
    total: 0,
    seq: 1,
  }
  const cli = (args: string[], token: string | null = OPS) =>
    startNode([CITYMETER_BIN, "dma", ...args, "--bridge", svc.httpUrl!], { CITYMETER_API_TOKEN: token ?? undefined })
      .done
  const store1 = async (f: Flow, rows: ReturnType<typeof hours>) =>
    expect(
      (await insertReadings(svc.store, { meterId: f.meterId, boot: 1, seq: f.seq++ }, rows, new Date())).kind,
    ).toBe("stored")
  const balance = async (q: string) => {
    const res = await svc.app.inject({ url: `/dmas/${id}/balance?${q}` })
    expect(res.statusCode, res.body).toBe(200)
    return (res.json() as { balance: Record<string, unknown>[] }).balance
  }

  beforeAll(async () => {
    svc = await startStack(kind, { httpPort: 0, apiTokens: { ops: OPS } })
    for (const c of customers) {
      await svc.store.registerMeter(c.meterId, new Date(D1))
      await svc.store.setLocation(c.meterId, { lat: 45, lon: 7, address: null, district: id })
    }
    await svc.store.registerMeter(inflow.meterId, new Date(D1))
  }, 180_000)
  afterAll(async () => {
    await svc?.stop()
  })

  test("citymeter dma put stores a DMA with its boundary; refusals store nothing", async () => {
    const square = [
      [7, 45],
      [7.01, 45],
      [7.01, 45.01],
      [7, 45.01],
      [7, 45],
    ]
    const good = join(dir, "area.geojson")
    writeFileSync(
      good,
      JSON.stringify({ type: "Feature", properties: {}, geometry: { type: "Polygon", coordinates: [square] } }),
    )
    const open = join(dir, "open.geojson")
    writeFileSync(open, JSON.stringify({ type: "Polygon", coordinates: [square.slice(0, -1)] }))

    const bad = await cli(["put", id, "--name", "North", "--boundary", open])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/ends where it starts/)
    expect((await svc.app.inject({ url: `/dmas/${id}` })).statusCode).toBe(404)

    const put = await cli([
      "put",
      id,
      "--name",
      "North",
      "--inflow",
      inflow.meterId,
      "--boundary",
      good,
      "--window",
      "01:00-04:00",
    ])
    expect(put.code, put.stderr).toBe(0)
    expect(put.stdout).toMatch(`stored DMA ${id} (1 inflow, 0 outflow, 0 named customers)`)

    // over HTTP: the ops scope, the members by district, refusals
    const body = { name: "sub", parentId: id }
    expect((await svc.app.inject({ method: "PUT", url: `/dmas/${sub}`, payload: body })).statusCode).toBe(401)
    const auth = { authorization: `Bearer ${OPS}` }
    const created = await svc.app.inject({ method: "PUT", url: `/dmas/${sub}`, payload: body, headers: auth })
    expect(created.statusCode).toBe(201)
    const unknown = await svc.app.inject({
      method: "PUT",
      url: `/dmas/${sub}`,
      payload: { ...body, inflow: [uid("nobody")] },
      headers: auth,
    })
    expect(unknown.statusCode).toBe(400)
    expect(unknown.json()).toMatchObject({ error: "CM_ERR_BAD_REQUEST" })
    const twice = await svc.app.inject({
      method: "PUT",
      url: `/dmas/${sub}`,
      payload: { ...body, inflow: [inflow.meterId], outflow: [inflow.meterId] },
      headers: auth,
    })
    expect(twice.statusCode).toBe(400)

    const got = (await svc.app.inject({ url: `/dmas/${id}` })).json() as Record<string, unknown>
    expect(got).toMatchObject({
      dmaId: id,
      name: "North",
      inflow: [inflow.meterId],
      boundary: { type: "Polygon", coordinates: [square] },
      nightFlow: { window: "01:00-04:00", tz: "UTC", baselineNights: 7 },
    })
    expect(got.members).toEqual(
      expect.arrayContaining(customers.map((c) => ({ meterId: c.meterId, role: "customer", source: "district" }))),
    )
    const list = await cli(["list"])
    expect(list.stdout).toMatch(new RegExp(`${id}\\tNorth\\t-\\tin: ${inflow.meterId}`))
  })

  test("the balance: losses are the leak; a late frame turns a provisional day final with the right number", async () => {
    for (const f of [...customers, inflow]) await store1(f, hours(f, D1, D1 + DAY))
    const [late] = customers
    const day2 = hours(late, D1 + DAY, D1 + 2 * DAY)
    await store1(late, day2.slice(0, -1))
    for (const f of [customers[1], inflow]) await store1(f, hours(f, D1 + DAY, D1 + 2 * DAY))

    const q = `bucket=day&from=2035-03-01&to=2035-03-03`
    const before = await balance(q)
    expect(before.map((r) => [r.start, r.lossesMl, r.coverage, r.provisional])).toEqual([
      ["2035-03-01T00:00:00.000Z", 24 * LEAK, 1, false],
      ["2035-03-02T00:00:00.000Z", 24 * LEAK + late.fwd(D1 + DAY + 23 * HOUR), 2 / 3, true],
    ])
    await store1(late, day2.slice(-1))
    const after = await balance(q)
    expect(after.map((r) => [r.lossesMl, r.provisional])).toEqual([
      [24 * LEAK, false],
      [24 * LEAK, false],
    ])
    expect(after[0].nrwShare).toBeCloseTo((24 * LEAK) / (after[0].systemInputMl as number), 12)
    const hourly = await balance(`bucket=hour&from=2035-03-02T00:00:00Z&to=2035-03-02T06:00:00Z`)
    expect(hourly.map((r) => r.lossesMl)).toEqual(Array(6).fill(LEAK))

    // every DMA's month: the sub-DMA has no meters, so nothing is covered
    const all = await svc.app.inject({ url: `/balances?bucket=month&from=2035-03-01&to=2035-04-01` })
    expect(all.statusCode).toBe(200)
    const rows = (all.json() as { balances: Record<string, unknown>[] }).balances.filter((r) =>
      [id, sub].includes(r.dmaId as string),
    )
    expect(rows.map((r) => [r.dmaId, r.lossesMl, r.meters, r.provisional])).toEqual([
      [id, 48 * LEAK, 3, true],
      [sub, 0, 0, true],
    ])
    // refusals: a range off the bucket's edges, no range
    const off = await svc.app.inject({ url: `/dmas/${id}/balance?bucket=day&from=2035-03-01T01:00:00Z&to=2035-03-02` })
    expect(off.json()).toMatchObject({ error: "CM_ERR_BAD_QUERY" })
    expect((await svc.app.inject({ url: `/dmas/${id}/balance` })).statusCode).toBe(400)

    // the CLI prints it
    const shown = await cli(["show", id, "--bucket", "day", "--from", "2035-03-01", "--to", "2035-03-03"])
    expect(shown.code, shown.stderr).toBe(0)
    expect(shown.stdout).toMatch(/customers: 2 \(0 named, the rest by district\)/)
    expect(shown.stdout).toMatch(/2035-03-02T00:00:00.000Z .* 9\.6 .*100%/)
    expect(shown.stdout).not.toMatch(/provisional/)
  })

  test("night flow per night from the API; OpenAPI; a parent goes after its sub-DMAs", async () => {
    const res = await svc.app.inject({ url: `/dmas/${id}/night-flow?from=2035-03-01&to=2035-03-02&meters=true` })
    expect(res.statusCode, res.body).toBe(200)
    const n = res.json() as { window: string; nights: Record<string, unknown>[]; meters: Record<string, unknown>[] }
    expect(n.window).toBe("01:00-04:00")
    expect(n.nights).toEqual([
      {
        night: "2035-03-01",
        minInputMlPerH: LEAK,
        at: "2035-03-01T01:00:00.000Z",
        customersMl: 0,
        hours: 3,
        complete: true,
      },
    ])
    expect(n.meters.map((m) => m.minMlPerH)).toEqual([0, 0])

    const api = (await svc.app.inject({ url: "/openapi.json" })).json() as { paths: Record<string, object> }
    expect(Object.keys(api.paths)).toEqual(
      expect.arrayContaining(["/dmas", "/dmas/{id}", "/dmas/{id}/balance", "/dmas/{id}/night-flow", "/balances"]),
    )

    const auth = { authorization: `Bearer ${OPS}` }
    const conflict = await svc.app.inject({ method: "DELETE", url: `/dmas/${id}`, headers: auth })
    expect(conflict.statusCode).toBe(409)
    expect(conflict.json()).toMatchObject({ error: "CM_ERR_DMA_CONFLICT" })
    expect((await cli(["delete", sub])).code).toBe(0)
    expect((await svc.app.inject({ method: "DELETE", url: `/dmas/${id}`, headers: auth })).statusCode).toBe(200)
    expect((await svc.app.inject({ url: `/dmas/${id}` })).statusCode).toBe(404)
  })
})
