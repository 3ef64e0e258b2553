// Pulse inputs counted below JavaScript (issue 20): the simulator's meter emits a real pulse train
// (width, rate = flow x pulses per litre, phase) on a button server sampled on the board's 9 ms
// grid (sim/src/pulse-output.ts); the board build's own drivers count its DOWN/UP events
// (firmware/pulses.ts), as on a board. Before, the firmware polled a level every 100 ms and lost
// every pulse under 100 ms and most above 5 per second: the 30 ms cases below failed then.
import { afterAll, describe, expect, test } from "vitest"
import { PULSE_SAMPLE_MS, maxPulseHz, pulseLimitsOf } from "../../bridge/src/tunables/pulse-limits.js"
import { SimMeter } from "../../sim/src/meter.js"
import { PulseTrain } from "../../sim/src/physics.js"
import { uid } from "../helpers.js"

describe("the pulse train", () => {
  test("a pulse begins at each pulse volume and lasts its width", () => {
    const t = new PulseTrain({ pulsesPerL: 1, widthMs: 150 }, 0)
    t.setFlow(0, 60_000) // 1 L/s: a pulse each second
    expect(t.level(999)).toBe(0)
    expect(t.level(1000)).toBe(1)
    expect(t.level(1149)).toBe(1)
    expect(t.level(1150)).toBe(0)
    expect(t.nextChangeMs(1150)).toBeCloseTo(2000, 6)
    t.setFlow(2500, 0)
    expect(t.pulses).toBe(2)
    expect(t.volumeMl).toBeCloseTo(2500, 6)
    expect(t.nextChangeMs(2700)).toBe(Infinity)
  })
  test("the phase moves the first pulse; pulses wider than the period merge", () => {
    const t = new PulseTrain({ pulsesPerL: 1, widthMs: 150, phase: 0.75 }, 0)
    t.setFlow(0, 60_000)
    expect(t.level(249)).toBe(0)
    expect(t.level(250)).toBe(1)
    const m = new PulseTrain({ pulsesPerL: 10, widthMs: 150 }, 0)
    m.setFlow(0, 60_000) // 10 Hz, 100 ms apart, each 150 ms long: the contact never opens
    for (let ms = 100; ms < 1000; ms += 10) expect(m.level(ms)).toBe(1)
    expect(m.pulses).toBe(9)
    expect(m.merged).toBe(8)
  })
})

interface Case {
  name: string
  /** water: pulses/L and flow; s0: imp/kWh and power */
  input: "water" | "s0"
  constant: number
  widthMs: number
  rate: number
  /** true: every pulse counts; false: pulses lost */
  countable: boolean
  settings?: Record<string, number>
}

const RUN_S = 6
const picow = pulseLimitsOf("citymeter_picow")
const CASES: Case[] = [
  { name: "reed 1/L, 150 ms, 120 L/min (2/s)", input: "water", constant: 1, widthMs: 150, rate: 120_000, countable: true, settings: { MAX_FLOW_LMIN: 120 } },
  { name: "S0 1000 imp/kWh, 30 ms, 11 kW (3.1/s)", input: "s0", constant: 1000, widthMs: 30, rate: 11_000, countable: true, settings: { PULSE_MS: 30 } },
  { name: "S0 1000 imp/kWh, 30 ms, 36 kW (10/s)", input: "s0", constant: 1000, widthMs: 30, rate: 36_000, countable: true, settings: { PULSE_MS: 30, MAX_POWER_W: 72_000 } },
  { name: "S0 1000 imp/kWh, 30 ms, 72 kW (20/s, the limit of 30 ms pulses)", input: "s0", constant: 1000, widthMs: 30, rate: 72_000, countable: true, settings: { PULSE_MS: 30, MAX_POWER_W: 72_000 } },
  { name: "10/L, 40 ms, 120 L/min (20/s)", input: "water", constant: 10, widthMs: 40, rate: 120_000, countable: true, settings: { PULSE_MS: 40, MAX_FLOW_LMIN: 60 } },
  { name: "S0 1000 imp/kWh, 5 ms, 36 kW (10/s, pulses under the 9 ms sampling)", input: "s0", constant: 1000, widthMs: 5, rate: 36_000, countable: false },
  { name: "10/L, 95 ms, 60 L/min (10/s, gaps of 5 ms)", input: "water", constant: 10, widthMs: 95, rate: 60_000, countable: false, settings: { MAX_FLOW_LMIN: 40 } },
] // prettier-ignore

describe("the firmware counts simulated pulse outputs from button events, as a board", () => {
  const meters: SimMeter[] = []
  afterAll(async () => {
    for (const m of meters) await m.stop()
  })

  test("the stated limits are the ones these cases sit in", () => {
    expect(PULSE_SAMPLE_MS).toBe(9)
    expect(maxPulseHz(30, "citymeter_picow")).toBe(20)
    expect(picow.minPulseMs).toBeGreaterThan(PULSE_SAMPLE_MS)
  })

  test("counted = generated within the limits, none counted at boot; pulses lost past them", async () => {
    // one meter at a time: several VMs in one process starve each other's event loops, and a VM
    // whose loop is late by more than jacdac's retransmissions (+20, +100 ms) can drop events
    const runs = []
    for (const c of CASES)
      runs.push(
        await (async () => {
          const water = c.input === "water"
          const meter = new SimMeter({
            meterId: uid("pulses"),
            board: "citymeter_picow",
            ...(water
              ? {
                  water: "pulses" as const,
                  pulses: { pulsesPerL: c.constant, widthMs: c.widthMs, phase: Math.random() },
                }
              : { electricity: "pulses" as const, s0: { impPerKwh: c.constant, widthMs: c.widthMs } }),
            // no broker: the meter keeps counting while it retries
            settings: { MQTT_HOST: "127.0.0.1", MQTT_PORT: 9, INTERVAL_S: 1, BATCH: 1, ...c.settings },
          })
          meters.push(meter)
          await meter.start()
          await meter.waitForLine(/simulated pulse outputs:.*counted from button events/, 30_000)
          // nothing flows yet: the firmware's count at boot is none (no phantom)
          const read = () => (water ? meter.firmwareWaterMl() : meter.firmwareEnergyWh())
          let atBoot = await read()
          for (let i = 0; i < 60 && atBoot === undefined; i++) {
            await new Promise((r) => setTimeout(r, 50))
            atBoot = await read()
          }
          await new Promise((r) => setTimeout(r, 500))
          atBoot = await read()
          if (water) meter.setWaterFlow(c.rate)
          else meter.setS0Power(c.rate)
          await new Promise((r) => setTimeout(r, RUN_S * 1000))
          if (water) meter.setWaterFlow(0)
          else meter.setS0Power(0)
          await new Promise((r) => setTimeout(r, c.widthMs + 1500))
          const out = water ? meter.waterPulses! : meter.s0Pulses!
          const perPulse = 1000 / c.constant
          const counted = Math.round(
            ((water ? await meter.firmwareWaterMl() : await meter.firmwareEnergyWh()) ?? NaN) / perPulse,
          )
          await meter.stop()
          return { c, atBoot, generated: out.train.pulses, merged: out.train.merged, downs: out.downs, counted }
        })(),
      )
    console.log(
      "pulse inputs, sampled every 9 ms as a board's button service (counted by the firmware in the VM / generated by the sim)\n" +
        runs
          .map(
            (r) =>
              `  ${r.c.name}: counted ${r.counted} of ${r.generated} generated (${r.merged} merged, ${r.downs} DOWN events sent), ` +
              `lost ${r.generated - r.counted}; at boot ${r.atBoot}`,
          )
          .join("\n"),
    )
    for (const r of runs) {
      expect(r.atBoot, r.c.name).toBe(0)
      expect(r.generated, r.c.name).toBeGreaterThan(5)
      if (r.c.countable) expect(r.counted, r.c.name).toBe(r.generated)
      else expect(r.counted, r.c.name).toBeLessThan(r.generated)
    }
  }, 180_000)
})
