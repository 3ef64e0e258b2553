// A live demo load for simulated meters (npm start, `citymeter sim`): each meter follows the
// household demand curve at 60x speed, phase-shifted per meter, with pressure sagging with flow;
// or, given a city (sim/src/city.ts), each meter follows its place in the city: customers their
// demand (less what a bypass takes, nothing once stuck), bulk meters their DMA's inflow.
import { CityRun, type CityPlan } from "./city.js"
import { householdPowerW, householdWaterMlMin, linePressurePa, mainsVoltageDv } from "./physics.js"
import type { SimMeter } from "./meter.js"

/** Simulated seconds per real second: one real second is one simulated minute. */
export const DEMO_SPEED = 60
const SPEED = DEMO_SPEED

/**
 * Alarm thresholds for meters driven at DEMO_SPEED. The firmware's intervals stay real, so each
 * real interval carries DEMO_SPEED times the water: at the firmware defaults (firmware/config.ts:
 * BURST_MLMIN 60000 mL/min, LEAK_S 86400 s) an ordinary morning shower (9 L/min simulated, 540
 * L/min as the firmware sees it) would raise BURST in the demo's first interval. The thresholds
 * are the defaults in simulated time instead.
 */
export const DEMO_ALARM_SETTINGS = { BURST_MLMIN: 60_000 * SPEED, LEAK_S: 86_400 / SPEED }

/** The demo fleet's defaults: `npm start` (METERS, INTERVAL_S, BATCH) and `citymeter sim`. */
export const DEMO_FLEET = { meters: 3, intervalS: 5, batch: 2 } as const

/** What the demo's time scale means, for banners. */
export const DEMO_SPEED_NOTE = `time runs ${SPEED}x: 1 real second = ${SPEED / 60} simulated minute of household demand`
const TICK_MS = 200

/**
 * Drives the meters' sensors until the returned stop function is called. With a city, each meter
 * whose id the city plans follows the city (its register in whole pulses); the others, and every
 * meter without a city, the household curve.
 */
export function driveDemo(meters: SimMeter[], city?: CityPlan): () => void {
  const run = city && new CityRun(city)
  const state = meters.map((_, i) => ({ water: 0, energy: 0, hourOffset: (i * 5) % 24 }))
  const t0 = Date.now()
  const step = (dtS: number) => {
    const simHours = ((Date.now() - t0) / 1000) * (SPEED / 3600)
    run?.advance(simHours)
    const now = run?.flows(simHours)
    meters.forEach((m, i) => {
      const s = state[i]
      const planned = now?.meters.get(m.meterId)
      if (run && planned) {
        const hour = run.hourOfDay(simHours)
        const customer = run.plan.meters.find((c) => c.meterId === m.meterId)?.role === "customer"
        const powerW = customer ? householdPowerW(hour) : 0
        s.energy += (powerW * dtS * SPEED) / 3600
        m.setWater({ volumeMl: run.registerMl(m.meterId), flowRateMlMin: Math.round(planned.registeredMlMin) })
        m.setElectricity({ energyWh: Math.floor(s.energy), powerW, voltageDv: mainsVoltageDv(hour) })
        m.setPressure(linePressurePa(planned.usedMlMin))
        m.setTamper(run.tamper(m.meterId, simHours))
        return
      }
      const hour = (7 + s.hourOffset + simHours) % 24
      const flow = householdWaterMlMin(hour)
      const powerW = householdPowerW(hour)
      s.water += (flow * dtS * SPEED) / 60
      s.energy += (powerW * dtS * SPEED) / 3600
      m.setWater({ volumeMl: Math.floor(s.water), flowRateMlMin: flow })
      m.setElectricity({ energyWh: Math.floor(s.energy), powerW, voltageDv: mainsVoltageDv(hour) })
      m.setPressure(linePressurePa(flow))
    })
  }
  step(0)
  const timer = setInterval(() => step(TICK_MS / 1000), TICK_MS)
  return () => clearInterval(timer)
}
