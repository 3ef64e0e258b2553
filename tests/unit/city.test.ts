// The simulated city's model (sim/src/city.ts, issue 25 item 6), pure: the same seed gives the same
// city; every meter lies inside its DMA's boundary; at every instant a DMA's inflow meter measures
// its customers' whole use plus the pipe leak; what the meters do not register is exactly the
// leak, the stuck meter's and the bypass's water.
import { expect, test } from "vitest"
import city, { demoCity } from "../../sim/scenarios/city.js"
import { CityRun, smallCity } from "../../sim/src/city.js"

test("the same seed makes the same city; another seed another layout", () => {
  const again = smallCity({ seed: 25, startHour: 0, pipeLeakFromH: 58, stuckFromH: 24, bypassFromH: 30 })
  expect(again).toEqual(city)
  const other = smallCity({ seed: 26, startHour: 0, pipeLeakFromH: 58, stuckFromH: 24, bypassFromH: 30 })
  expect(other.meters.map((m) => [m.lat, m.lon])).not.toEqual(city.meters.map((m) => [m.lat, m.lon]))
  expect(demoCity((i) => `demo-${i}`).meters.map((m) => m.meterId)).toEqual(city.meters.map((_, i) => `demo-${i + 1}`))
})

test("every meter lies inside its DMA's boundary, and each DMA has one inflow meter and customers of both profiles", () => {
  for (const d of city.dmas) {
    const ring = d.boundary.coordinates[0]
    expect(ring[0]).toEqual(ring[ring.length - 1])
    const [lons, lats] = [ring.map((p) => p[0]), ring.map((p) => p[1])]
    const mine = city.meters.filter((m) => m.dmaId === d.dmaId)
    expect(mine.filter((m) => m.role === "inflow")).toHaveLength(1)
    for (const m of mine) {
      expect(m.lon > Math.min(...lons) && m.lon < Math.max(...lons), m.meterId).toBe(true)
      expect(m.lat > Math.min(...lats) && m.lat < Math.max(...lats), m.meterId).toBe(true)
    }
  }
  expect(new Set(city.meters.map((m) => m.profile).filter(Boolean))).toEqual(new Set(["household", "commercial"]))
})

test("the inflow is the customers' use plus the leak; the unregistered water is the leak, the stuck meter's and the bypass's", () => {
  const run = new CityRun(city)
  for (const tH of [3, 7.5, 30.1, 60, 80]) {
    const { meters, dmas } = run.flows(tH)
    for (const d of city.dmas) {
      const mine = city.meters.filter((m) => m.dmaId === d.dmaId)
      const bulk = mine.find((m) => m.role === "inflow")!
      const customers = mine.filter((m) => m.role === "customer")
      const used = customers.reduce((s, m) => s + meters.get(m.meterId)!.usedMlMin, 0)
      const registered = customers.reduce((s, m) => s + meters.get(m.meterId)!.registeredMlMin, 0)
      const v = dmas.get(d.dmaId)!
      expect(meters.get(bulk.meterId)!.registeredMlMin).toBeCloseTo(used + v.pipeLeakMl, 9)
      expect(meters.get(bulk.meterId)!.registeredMlMin - registered).toBeCloseTo(
        v.pipeLeakMl + v.stuckMl + v.bypassMl,
        9,
      )
    }
  }
  // the tamper switch is open for the first quarter hour of the bypass only
  const bypass = city.events.find((e) => e.kind === "bypass")!
  expect(
    [bypass.fromH - 0.01, bypass.fromH, bypass.fromH + 0.2, bypass.fromH + 0.25].map((t) =>
      run.tamper(bypass.meterId, t),
    ),
  ).toEqual([false, true, true, false])
  // integrated: the registers in whole pulses, at most one pulse short of the water through them
  run.advance(24)
  for (const m of city.meters) {
    const r = run.registerMl(m.meterId)
    expect(r % city.resolutionMl).toBe(0)
    // a bulk meter registers all the water through it
    if (m.role === "inflow") expect(run.usedMl(m.meterId) - r).toBeGreaterThanOrEqual(0)
    if (m.role === "inflow") expect(run.usedMl(m.meterId) - r).toBeLessThan(city.resolutionMl)
  }
  const north = city.dmas[0].dmaId
  expect(run.injected(north).nightLeakMl).toBeCloseTo(24 * 60 * 500, 3)
})
