// npm start's small city (issue 25 item 6; scripts/demo.ts with `city`): the demo registers the
// city's DMAs with their boundaries and its meters' places, and drives each meter (the real
// firmware in its VM) by its place in the city. Here the city's faults start at once (npm start's
// demoCity starts them after one and two simulated hours): within seconds the north DMA's inflow
// meter measures its customers plus the pipe leak, and the south's its customers' whole use while
// the stuck meter registers nothing and the bypass takes half of a household's water.
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { configFromEnv, type ServiceConfig } from "../../bridge/src/service.js"
import { demoMeterId, startDemo, type Demo } from "../../scripts/demo.js"
import { smallCity } from "../../sim/src/city.js"
import { sleep } from "../fault-util.js"
import { captureLog, waitFor } from "../helpers.js"

const dataDir = mkdtempSync(join(tmpdir(), "cm-demo-city-"))
const config = (): ServiceConfig => ({
  ...configFromEnv({}),
  databaseUrl: `pglite:${join(dataDir, "pglite")}`,
  embeddedMqttPort: 0,
  log: captureLog().log,
})
const city = smallCity({
  seed: 25,
  startHour: 6,
  meterId: demoMeterId,
  pipeLeakFromH: 0,
  stuckFromH: 0,
  bypassFromH: 0,
})
const leak = city.events.find((e) => e.kind === "pipeLeak")!
const stuck = city.events.find((e) => e.kind === "stuck")!
const office = city.meters.find((m) => m.profile === "commercial")!

let demo: Demo
const store = () => demo.svc.store

beforeAll(async () => {
  demo = await startDemo({ config: config(), meters: 0, intervalS: 1, batch: 1, dataDir, city })
  for (const m of demo.meters)
    await waitFor(
      `${m.meterId} online with 2 frames`,
      async () => (await store().getMeter(m.meterId))?.online && (await store().readings(m.meterId)).length >= 2,
      40_000,
    )
}, 90_000)
afterAll(async () => {
  await demo?.stop()
  rmSync(dataDir, { recursive: true, force: true })
})

describe("npm start's small city", () => {
  test("its DMAs, boundaries and meters' places are registered: the API and SensorThings show them", async () => {
    expect(demo.meters.map((m) => m.meterId)).toEqual(city.meters.map((m) => m.meterId))
    const dmas = (await demo.svc.app.inject({ url: "/dmas" })).json().dmas as Record<string, unknown>[]
    expect(dmas.map((d) => [d.dmaId, d.inflow, d.boundary])).toEqual(
      city.dmas.map((d) => [
        d.dmaId,
        city.meters.filter((m) => m.dmaId === d.dmaId && m.role === "inflow").map((m) => m.meterId),
        d.boundary,
      ]),
    )
    const locs = (await demo.svc.app.inject({ url: "/sta/v1.1/Locations?$top=100" })).json() as {
      value: { "@iot.id": string; location: { coordinates: number[] }; properties: { district: string } }[]
    }
    expect(locs.value.map((l) => [l.location.coordinates, l.properties.district])).toEqual(
      city.meters.map((m) => [[m.lon, m.lat], m.dmaId]),
    )
  })

  test("the meters follow the city: the pipe leak and the apparent losses show between inflow and customers", async () => {
    const from = Date.now()
    await sleep(12_000)
    const to = Date.now() - 2000
    // mL per real second of each meter's readings in [from, to) (its 1 s intervals)
    const rate = new Map<string, number>()
    for (const m of city.meters) {
      const rows = await store().readings(m.meterId, { from: new Date(from), to: new Date(to), limit: 10_000 })
      expect(rows.length, m.meterId).toBeGreaterThan(5)
      rate.set(m.meterId, rows.reduce((s, r) => s + (r.volumeMl ?? 0), 0) / rows.length)
    }
    const losses = (dmaId: string) => {
      const of = (role: string) =>
        city.meters.filter((m) => m.dmaId === dmaId && m.role === role).reduce((s, m) => s + rate.get(m.meterId)!, 0)
      return { inflow: of("inflow"), losses: of("inflow") - of("customer") }
    }
    const [north, south] = city.dmas.map((d) => losses(d.dmaId))
    // at 60x a simulated minute per real second: the leak's 5 L/min is 5 L per real second
    console.log(
      `demo city: north ${JSON.stringify(north)}, south ${JSON.stringify(south)} mL/s; leak ${leak.flowMlMin} mL/s`,
    )
    // the city starts at 06:00 and runs a simulated hour a real minute: the office opens at 08:00
    expect(rate.get(office.meterId)).toBe(0)
    expect(north.losses / leak.flowMlMin).toBeGreaterThan(0.6)
    expect(north.losses / leak.flowMlMin).toBeLessThan(1.4)
    // south: the stuck household's and half the bypassed household's water (about half the inflow)
    expect(rate.get(stuck.meterId)).toBe(0)
    expect(south.losses / south.inflow).toBeGreaterThan(0.3)
    expect(south.losses / south.inflow).toBeLessThan(0.7)
  }, 45_000)
})
