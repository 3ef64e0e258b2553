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

  test("apparent losses and zone pressure with the ILI over HTTP and from the CLI; bad ranges are 400s", async () => {
    // the network's size from `dma put` (the rest as before)
    const put = await cli(
      ["put", id, "--name", "North", "--inflow", inflow.meterId, "--window", "01:00-04:00"].concat([
        "--mains-km",
        "1.5",
        "--connections",
        "2",
        "--service-length-m",
        "5",
      ]),
    )
    expect(put.code, put.stderr).toBe(0)
    const got = (await svc.app.inject({ url: `/dmas/${id}` })).json() as Record<string, unknown>
    expect(got).toMatchObject({ mainsKm: 1.5, connections: 2, avgServiceLengthM: 5, losses: { stuckDays: 3 } })
    // day 3: the customers measure 3 bar; the second flows 50 mL back at 02:00
    const D3 = D1 + 2 * DAY
    const [c1, c2] = customers
    await store1(
      c1,
      hours(c1, D3, D3 + DAY).map((r) => ({ ...r, pressureAvgPa: 300_000 })),
    )
    const back = (r: ReturnType<typeof hours>[number]) => (r.ts.getTime() === D3 + 2 * HOUR ? 50 : 0)
    await store1(
      c2,
      hours(c2, D3, D3 + DAY).map((r) => ({ ...r, pressureAvgPa: 300_000, reverseMl: back(r) })),
    )
    await store1(
      inflow,
      hours(inflow, D3, D3 + DAY).map((r) => ({ ...r, pressureAvgPa: 500_000 })),
    )

    const res = await svc.app.inject({ url: `/dmas/${id}/apparent-losses?from=2035-03-03&to=2035-03-04` })
    expect(res.statusCode, res.body).toBe(200)
    expect((res.json() as { findings: unknown[] }).findings).toEqual([
      {
        meterId: c2.meterId,
        kind: "reverse-flow",
        from: "2035-03-03T00:00:00.000Z",
        to: "2035-03-04T00:00:00.000Z",
        evidence: {
          reverseMl: 50,
          reverseDays: 1,
          days: ["2035-03-03"],
          backflowAlarmsRaised: 0,
          backflowOpenAtFrom: false,
          backflowOpenAtTo: false,
        },
      },
    ])
    const p = await svc.app.inject({ url: `/dmas/${id}/pressure?from=2035-03-03&to=2035-03-04` })
    expect(p.statusCode, p.body).toBe(200)
    const ans = p.json() as { avgPa: number; meters: number; ili: Record<string, number | boolean> }
    expect([ans.avgPa, ans.meters]).toEqual([300_000, 2]) // the inflow meter's 5 bar is not the zone's
    // by hand: UARL = (18 × 1.5 km + 0.8 × 2 + 25 × 2 × 5 m / 1000) × 300 kPa / 9.80665 kPa per m
    const uarl = (27 + 1.6 + 0.25) * (300 / 9.80665)
    expect(ans.ili.carlLPerDay).toBe((24 * LEAK) / 1000)
    expect(ans.ili.uarlLPerDay).toBeCloseTo(uarl, 9)
    expect(ans.ili.ili).toBeCloseTo((24 * LEAK) / 1000 / uarl, 12)
    expect(ans.ili.apparentLossesSubtracted).toBe(false)

    for (const q of [
      "",
      "from=2035-03-03",
      "from=2035-03-03T01:00:00Z&to=2035-03-04",
      "from=2035-01-01&to=2035-06-01",
    ]) {
      for (const route of ["apparent-losses", "pressure"]) {
        const bad = await svc.app.inject({ url: `/dmas/${id}/${route}?${q}` })
        expect([bad.statusCode, (bad.json() as { error: string }).error], `${route}?${q}`).toEqual([
          400,
          "CM_ERR_BAD_QUERY",
        ])
      }
    }
    expect(
      (await svc.app.inject({ url: `/dmas/${id}/pressure?from=2035-03-03&to=2035-03-04&bucket=month` })).statusCode,
    ).toBe(400)
    expect(
      (await svc.app.inject({ url: `/dmas/nope-${id}/apparent-losses?from=2035-03-03&to=2035-03-04` })).statusCode,
    ).toBe(404)

    const losses = await cli(["losses", id, "--from", "2035-03-03", "--to", "2035-03-04"])
    expect(losses.code, losses.stderr).toBe(0)
    expect(losses.stdout).toMatch(new RegExp(`${c2.meterId}\treverse-flow\t.*"reverseMl":50`))
    const pressure = await cli(["pressure", id, "--from", "2035-03-03", "--to", "2035-03-04"])
    expect(pressure.code, pressure.stderr).toBe(0)
    expect(pressure.stdout).toMatch(/average zone pressure: 300\.0 kPa over 2 meters/)
    expect(pressure.stdout).toMatch(/ILI 0\.01: real losses 10 L\/day \(apparent losses not subtracted\)/)
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
      expect.arrayContaining([
        "/dmas",
        "/dmas/{id}",
        "/dmas/{id}/balance",
        "/dmas/{id}/night-flow",
        "/balances",
        "/dmas/{id}/apparent-losses",
        "/dmas/{id}/pressure",
      ]),
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
