// A live demo load for simulated meters (npm start, `citymeter sim`): each meter follows the
// household demand curve at 60x speed, phase-shifted per meter, with pressure sagging with flow.
import { householdPowerW, householdWaterMlMin, linePressurePa, mainsVoltageDv } from "./physics.js"
import type { SimMeter } from "./meter.js"

const SPEED = 60
const TICK_MS = 200

/** Drives the meters' sensors until the returned stop function is called. */
export function driveDemo(meters: SimMeter[]): () => void {
  const state = meters.map((_, i) => ({ water: 0, energy: 0, hourOffset: (i * 5) % 24 }))
  const t0 = Date.now()
  const step = (dtS: number) => {
    const simHours = ((Date.now() - t0) / 1000) * (SPEED / 3600)
    meters.forEach((m, i) => {
      const s = state[i]
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
