// Every simulator scenario (sim/scenarios) against the real firmware, all meters at once on one
// bridge: each scenario type asserts what the bridge stored.
import mqtt from "mqtt"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { encodeDownlink } from "../../bridge/src/codec/downlink.js"
import { downTopic } from "../../bridge/src/topics.js"
import type { SimMeter } from "../../sim/src/meter.js"
import { runScenario, type ScenarioResult } from "../../sim/src/scenario.js"
import { scenarios } from "../../sim/scenarios/index.js"
import { startStack, uid, waitFor, type TestStack } from "../helpers.js"
import { finalRows, scenarioMeter, storedRows, type Alarm } from "../scenario-util.js"

const pairs = (a: Alarm[], type: string) => a.filter((x) => x.type === type).map((x) => x.active)

describe("scenarios, all meters at once", () => {
  let stack: TestStack
  let ops: mqtt.MqttClient
  const meters: SimMeter[] = []
  const results = new Map<string, ScenarioResult>()

  beforeAll(async () => {
    stack = await startStack("embedded")
    ops = await mqtt.connectAsync(stack.mqttUrl, { clientId: uid("ops") })
    const run = Object.values(scenarios).filter((s) => !s.events.some((e) => e.kind === "brokerOutage"))
    await Promise.all(
      run.map(async (s) => {
        const meter = scenarioMeter(s, stack.mqttUrl)
        meters.push(meter)
        const r = await runScenario(s, meter, {
          sendTime: async (meterId, unixMs) => {
            await ops.publishAsync(downTopic(meterId, "time"), Buffer.from(encodeDownlink({ time: { unixMs } })), {
              qos: 1,
            })
          },
        })
        results.set(s.name, r)
      }),
    )
  }, 120_000)
  afterAll(async () => {
    for (const m of meters) await m.stop()
    await ops?.endAsync()
    await stack?.stop()
  })

  const alarms = async (name: string): Promise<Alarm[]> =>
    (await stack.app.inject({ url: `/meters/${results.get(name)!.meter.meterId}/alarms` })).json().alarms

  test("household day: every millilitre stored, demand peaks, pressure sags with demand", async () => {
    const r = results.get("household-day")!
    const rows = await finalRows(stack, r)
    expect(rows.reduce((a, x) => a + x.volumeMl, 0)).toBe(r.waterMl - (rows[0].waterTotalMl - rows[0].volumeMl))
    const peak = rows.reduce((a, b) => (b.volumeMl > a.volumeMl ? b : a))
    const night = rows.filter((x) => x.volumeMl === 0)
    expect(peak.volumeMl).toBeGreaterThan(100_000) // > 100 L in a simulated hour
    expect(night.length).toBeGreaterThan(0)
    for (const n of night) expect(peak.pressureAvgPa).toBeLessThan(n.pressureAvgPa)
    expect((await alarms("household-day")).map((a) => a.type)).toEqual([])
  })

  test("commercial day: demand only in opening hours", async () => {
    const r = results.get("commercial-day")!
    const rows = await finalRows(stack, r)
    expect(rows.filter((x) => x.volumeMl > 0).length).toBeGreaterThan(3)
    expect(rows.filter((x) => x.volumeMl === 0).length).toBeGreaterThan(3)
  })

  test("leak: a leak alarm raised and cleared, and the leaked volume stored", async () => {
    const r = results.get("leak")!
    const rows = await finalRows(stack, r)
    expect(r.volumeBy.leak).toBeGreaterThan(780) // 6 L/min for 8 s = 800 mL
    // a pulse output (100 mL per pulse) that the firmware counted: the host serves no volume
    expect(r.meter.pulseTrain!.pulses * 100).toBe(r.waterMl)
    expect(r.waterMl).toBeGreaterThanOrEqual(700)
    expect(rows.reduce((a, x) => a + x.volumeMl, 0)).toBe(r.waterMl)
    expect(pairs(await alarms("leak"), "LEAK")).toEqual([true, false])
  })

  test("burst: a burst alarm and not a leak", async () => {
    const r = results.get("burst")!
    const rows = await finalRows(stack, r)
    expect(rows.reduce((a, x) => a + x.volumeMl, 0)).toBe(r.waterMl)
    const a = await alarms("burst")
    expect(pairs(a, "BURST")).toEqual([true, false])
    expect(pairs(a, "LEAK")).toEqual([])
  })

  test("backflow: the reverse volume is stored and alarmed", async () => {
    const r = results.get("backflow")!
    const rows = await finalRows(stack, r)
    expect(r.reverseMl).toBeGreaterThan(550) // 12 L/min for 3 s = 600 mL
    await waitFor("reverse volume", async () => {
      const all = await storedRows(stack, r.meter.meterId)
      return all.reduce((a, x) => a + (x.reverseMl ?? 0), 0) === r.reverseMl
    })
    expect(rows.length).toBeGreaterThan(0)
    expect(pairs(await alarms("backflow"), "BACKFLOW")).toEqual([true, false])
  })

  test("pressure transient: low pressure raised while the line is down, cleared after", async () => {
    const r = results.get("pressure-transient")!
    const rows = await finalRows(stack, r)
    expect(Math.min(...rows.map((x) => x.pressureMinPa))).toBe(r.minPressurePa)
    expect(pairs(await alarms("pressure-transient"), "PRESSURE_LOW")).toEqual([true, false])
  })

  test("tamper: case switch and magnet each raised and cleared", async () => {
    const a = await alarms("tamper")
    expect(pairs(a, "TAMPER")).toEqual([true, false])
    expect(pairs(a, "MAGNETIC_FIELD")).toEqual([true, false])
  })

  test("power loss: a second boot, totals continuous, nothing lost", async () => {
    const r = results.get("power-loss")!
    const rows = await finalRows(stack, r)
    // two boots: the first at a random start (proto Uplink.boot), then the next one
    const boots = [...new Set(rows.map((x) => x.boot))].sort((a, b) => a - b)
    expect(boots).toHaveLength(2)
    expect(boots[1]).toBe(boots[0] + 1)
    expect(rows[rows.length - 1].waterTotalMl).toBe(r.waterMl)
  })

  test("clock skew: readings an hour behind, then corrected", async () => {
    const r = results.get("clock-skew")!
    const rows = await storedRows(stack, r.meter.meterId)
    const now = Date.now()
    expect(rows.some((x) => Math.abs(now - 3600_000 - Date.parse(x.ts)) < 60_000)).toBe(true)
    const latest = rows.reduce((a, b) => (Date.parse(b.ts) > Date.parse(a.ts) ? b : a))
    expect(Math.abs(now - Date.parse(latest.ts))).toBeLessThan(15_000)
    expect((await stack.metrics.clockCorrections.get()).values[0].value).toBeGreaterThanOrEqual(1)
  })
})
