// End to end with the real firmware bytecode in the DeviceScript VM: simulated sensors →
// firmware → MQTT → bridge → data tier → HTTP API. Once on Mosquitto + PostgreSQL, once on the
// embedded broker + embedded database.
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { SimMeter } from "../../sim/src/meter.js"
import { apiReadings, STACKS, startStack, uid, waitFor, type ApiReading, type TestStack } from "../helpers.js"

describe.each(STACKS)("end to end on %s", (kind) => {
  let stack: TestStack
  let meter: SimMeter | undefined
  beforeAll(async () => {
    stack = await startStack(kind)
  })
  afterAll(async () => {
    await meter?.stop()
    await stack?.stop()
  })

  const readings = (meterId: string) => apiReadings(stack, meterId)

  test("the API returns exactly the values the simulated sensors were set to", async () => {
    const t0 = Date.now()
    const meterId = uid("e2e")
    const url = new URL(stack.mqttUrl)
    meter = new SimMeter({
      meterId,
      water: "register", // set volumes the bridge must store exactly
      settings: { MQTT_HOST: url.hostname, MQTT_PORT: Number(url.port), INTERVAL_S: 1, BATCH: 2 },
    })
    const phase1 = { volumeMl: 10_000, energyWh: 777, powerW: 420, voltageDv: 2301, pressurePa: 310_000 }
    const phase2 = { volumeMl: 12_500, energyWh: 780, powerW: -150, voltageDv: 2280, pressurePa: 250_000 }
    const set = (p: typeof phase1) => {
      meter!.setWater({ volumeMl: p.volumeMl })
      meter!.setElectricity({ energyWh: p.energyWh, powerW: p.powerW, voltageDv: p.voltageDv })
      meter!.setPressure(p.pressurePa)
    }
    set(phase1)
    await meter.start()

    const steady = (r: ApiReading, p: typeof phase1) =>
      r.pressureMinPa === p.pressurePa && r.pressureMaxPa === p.pressurePa && r.powerW === p.powerW
    // two frames of steady phase-1 intervals
    await waitFor(
      "phase 1 readings",
      async () => (await readings(meterId)).filter((r) => steady(r, phase1)).length >= 4,
    )
    set(phase2)
    await waitFor(
      "phase 2 readings",
      async () => (await readings(meterId)).filter((r) => steady(r, phase2)).length >= 4,
    )

    const rows = await readings(meterId)
    for (const r of rows) {
      // every interval is phase 1, phase 2, or the one interval that straddles the change
      const p =
        r.pressureAvgPa === phase1.pressurePa && steady(r, phase1) ? phase1 : steady(r, phase2) ? phase2 : undefined
      if (p) {
        expect(r.pressureAvgPa).toBe(p.pressurePa)
        expect(r.voltageDv).toBe(p.voltageDv)
        expect(r.powerW).toBe(p.powerW)
      } else {
        expect(r.pressureMinPa).toBe(phase2.pressurePa)
        expect(r.pressureMaxPa).toBe(phase1.pressurePa)
      }
      expect(r.intervalS).toBe(1)
    }
    // counters: a fresh meter adopts the sensor's register; increases add up exactly
    const first = rows[0]
    const last = rows[rows.length - 1]
    expect(first.waterTotalMl - first.volumeMl).toBe(phase1.volumeMl)
    expect(last.waterTotalMl).toBe(phase2.volumeMl)
    expect(last.energyTotalWh).toBe(phase2.energyWh)
    expect(rows.reduce((s, r) => s + r.volumeMl, 0)).toBe(phase2.volumeMl - phase1.volumeMl)
    expect(rows.reduce((s, r) => s + r.energyWh, 0)).toBe(phase2.energyWh - phase1.energyWh)
    // totals are continuous row to row
    for (let i = 1; i < rows.length; i++) expect(rows[i].waterTotalMl).toBe(rows[i - 1].waterTotalMl + rows[i].volumeMl)
    // seq has no gaps and intervals are consecutive
    // seq has no gaps across every queued frame: readings and the alarms between them (the
    // step change of the counters is a burst)
    const alarms = (await stack.app.inject({ url: `/meters/${meterId}/alarms` })).json().alarms as { seq: number }[]
    const seqs = [...new Set([...rows.map((r) => r.seq), ...alarms.map((a) => a.seq)])].sort((a, b) => a - b)
    expect(seqs).toEqual(seqs.map((_, i) => seqs[0] + i))
    // time: the bridge synced the meter's clock on birth
    const synced = rows.filter((r) => r.timeSynced)
    expect(synced.length).toBeGreaterThan(0)
    for (const r of synced) {
      expect(Date.parse(r.ts)).toBeGreaterThanOrEqual(t0 - 2000)
      expect(Date.parse(r.ts)).toBeLessThanOrEqual(Date.now())
    }

    const m = (await stack.app.inject({ url: `/meters/${meterId}` })).json()
    expect(m).toMatchObject({ meterId, online: true, intervalS: 1, batch: 2 })
    // a meter's first boot starts at a random value in [2^21, 2^28) (proto Uplink.boot)
    expect(m.boot).toBeGreaterThanOrEqual(2 ** 21)
    expect(m.boot).toBeLessThan(2 ** 28)
    expect(m.firmware).toMatch(/^citymeter-fw \d+\.\d+\.\d+$/)
    // the birth says what the meter measures and evaluates: the simulator's sensors, all of them
    expect(m.channels).toEqual(expect.arrayContaining(["WATER", "VOLTAGE", "PRESSURE"]))
    expect(m.alarmRules).toEqual(expect.arrayContaining(["LEAK", "UNDERVOLTAGE"]))

    // power loss: the broker publishes the meter's last will, a death frame
    await meter.stop()
    await waitFor("death", async () => !(await stack.app.inject({ url: `/meters/${meterId}` })).json().online)
    console.log(
      `e2e ${kind}: ${rows.length} intervals in ${new Set(rows.map((r) => r.seq)).size} frames, ${Date.now() - t0} ms`,
    )
  })
})
