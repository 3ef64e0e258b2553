// Scenarios: a small file describes a meter's day (demand profile) and scripted events; the
// runner plays it against the real firmware in the VM, faster than real time.
import {
  commercialWaterMlMin,
  householdPowerW,
  householdWaterMlMin,
  linePressurePa,
  mainsVoltageDv,
} from "./physics.js"
import { SimMeter, type SimMeterOptions } from "./meter.js"

export type Profile = "household" | "commercial" | "idle"

export type ScenarioEvent =
  /** Extra continuous flow (a running toilet, a dripping pipe). */
  | { kind: "leak"; at: number; until: number; flowMlMin: number }
  /** A burst main: very high flow. */
  | { kind: "burst"; at: number; until: number; flowMlMin: number }
  /** Water flowing back into the network. */
  | { kind: "backflow"; at: number; until: number; flowMlMin: number }
  /** Pressure falls by dropPa (a pump trip, a break upstream). */
  | { kind: "pressure"; at: number; until: number; dropPa: number }
  | { kind: "tamper"; at: number; until: number }
  | { kind: "magnet"; at: number; until: number }
  /** The meter loses power: the VM stops dead and boots again from its flash. */
  | { kind: "powerLoss"; at: number; until: number }
  /** The broker goes away (needs a runner with broker control). */
  | { kind: "brokerOutage"; at: number; until: number }
  /** A bad time source sets the meter's clock `offsetS` seconds off. */
  | { kind: "clockSkew"; at: number; offsetS: number }

export interface Scenario {
  name: string
  description: string
  profile: Profile
  /** Simulated seconds per real second (the firmware's intervals stay real: keep INTERVAL_S short). */
  speed: number
  /** Simulated hour of day at the start. */
  startHour: number
  /** Real seconds to run. */
  durationS: number
  /** Meter settings (INTERVAL_S, BATCH, alarm thresholds, ...). */
  settings: Record<string, number | string>
  /**
   * How the simulated meter is built. Default: a water register (`{ water: "register" }`), since
   * scenarios compress time and pulses that fast are past the GPIO polling. `{ water: "pulses",
   * board }` makes its water meter a pulse output that the board build's driver counts, as on a
   * board (real time only: speed 1, no reverse flow).
   */
  meter?: Pick<SimMeterOptions, "water" | "board" | "pulses">
  events: ScenarioEvent[]
}

export function defineScenario(s: Scenario): Scenario {
  return s
}

export interface ScenarioHooks {
  stopBroker?(): Promise<void>
  startBroker?(): Promise<void>
  /** Publishes a TimeSync to the meter (the runner has no MQTT client of its own). */
  sendTime?(meterId: string, unixMs: number): Promise<void>
}

/** What the simulator generated: the counters' final values and the volume by source. */
export interface ScenarioResult {
  meter: SimMeter
  /** Forward volume on the meter's register; for a pulse output, the volume of the pulses it gave. */
  waterMl: number
  reverseMl: number
  energyWh: number
  /** Volume added by each event kind (leak, burst) and by the demand profile. */
  volumeBy: Record<string, number>
  minPressurePa: number
  maxPressurePa: number
}

const TICK_MS = 100

function active(e: ScenarioEvent, t: number) {
  return "until" in e ? t >= e.at && t < e.until : false
}

/**
 * Runs a scenario: starts the meter, drives its sensors every 100 ms from the profile and the
 * events, then holds the counters still for `settleS` real seconds so the last frames carry
 * final values.
 */
export async function runScenario(
  s: Scenario,
  meter: SimMeter,
  hooks: ScenarioHooks = {},
  settleS = 4,
): Promise<ScenarioResult> {
  const r: ScenarioResult = {
    meter,
    waterMl: 0,
    reverseMl: 0,
    energyWh: 0,
    volumeBy: {},
    minPressurePa: Infinity,
    maxPressurePa: 0,
  }
  let energy = 0
  const add = (k: string, ml: number) => (r.volumeBy[k] = (r.volumeBy[k] ?? 0) + ml)
  let carryMl = 0
  let carryRev = 0

  const apply = (t: number, dtS: number) => {
    const hour = (s.startHour + (t * s.speed) / 3600) % 24
    const simDt = dtS * s.speed
    const base =
      s.profile === "household"
        ? householdWaterMlMin(hour)
        : s.profile === "commercial"
          ? commercialWaterMlMin(hour)
          : 0
    let flow = base
    let reverse = 0
    let drop = 0
    for (const e of s.events) {
      if (!active(e, t)) continue
      if (e.kind === "leak" || e.kind === "burst") flow += e.flowMlMin
      if (e.kind === "backflow") reverse += e.flowMlMin
      if (e.kind === "pressure") drop += e.dropPa
    }
    // integrate in whole millilitres; remainders carry over so nothing is lost to rounding
    carryMl += (flow * simDt) / 60
    const ml = Math.floor(carryMl)
    carryMl -= ml
    carryRev += (reverse * simDt) / 60
    const rml = Math.floor(carryRev)
    carryRev -= rml
    if (ml > 0) {
      // attribute the whole-mL step to its sources in proportion
      add("demand", (ml * base) / Math.max(flow, 1))
      for (const e of s.events)
        if ((e.kind === "leak" || e.kind === "burst") && active(e, t)) add(e.kind, (ml * e.flowMlMin) / flow)
    }
    r.waterMl += ml
    r.reverseMl += rml
    // a pulse output follows the flow itself (the firmware counts its pulses); a register is set
    if (meter.pulseTrain) {
      if (reverse || s.speed !== 1)
        throw new Error(`scenario ${s.name}: a pulse output runs in real time, forward only`)
      meter.setWaterFlow(flow)
    } else meter.setWater({ volumeMl: r.waterMl, reverseMl: r.reverseMl, flowRateMlMin: flow - reverse })
    const powerW = householdPowerW(hour)
    energy += (powerW * simDt) / 3600
    r.energyWh = Math.floor(energy)
    const pressure = Math.max(0, linePressurePa(flow) - drop)
    r.minPressurePa = Math.min(r.minPressurePa, pressure)
    r.maxPressurePa = Math.max(r.maxPressurePa, pressure)
    meter.setElectricity({ energyWh: r.energyWh, powerW, voltageDv: mainsVoltageDv(hour) })
    meter.setPressure(pressure)
    meter.setTamper(s.events.some((e) => e.kind === "tamper" && active(e, t)))
    meter.setMagnet(s.events.some((e) => e.kind === "magnet" && active(e, t)))
  }

  apply(0, 0)
  await meter.start()
  // wait for the meter's first frame: a new meter adopts its counters from the first read
  await meter.waitForLine(/frame boot=\d+ seq=\d+/, 30_000)
  // a pulse output is counted once the board's driver serves the Water Flow role (VM's dmesg)
  if (meter.pulseTrain) await meter.waitForLine(/set role CitymeterWaterFlow\d* ->/, 30_000)
  const done = new Set<ScenarioEvent>()
  const t0 = Date.now()
  let lastT = 0
  for (;;) {
    const t = (Date.now() - t0) / 1000
    if (t >= s.durationS) break
    for (const e of s.events) {
      if (done.has(e)) continue
      if (e.kind === "clockSkew" && t >= e.at) {
        done.add(e)
        await hooks.sendTime?.(meter.meterId, Date.now() + e.offsetS * 1000)
      }
      if ((e.kind === "powerLoss" || e.kind === "brokerOutage") && t >= e.at) {
        done.add(e)
        const stop = e.kind === "powerLoss" ? () => meter.stop() : () => hooks.stopBroker!()
        const start = e.kind === "powerLoss" ? () => meter.start() : () => hooks.startBroker!()
        await stop()
        setTimeout(() => void start(), (e.until - e.at) * 1000)
      }
    }
    // the time since the last tick, not TICK_MS: on a loaded machine ticks come late, and a fixed
    // step would make less flow than the scenario says (6 L/min for 8 s read 720 mL)
    apply(t, t - lastT)
    lastT = t
    await new Promise((res) => setTimeout(res, TICK_MS))
  }
  if (meter.pulseTrain) {
    // the water stops; the meter shows what its pulses carried (the volume short of the next pulse
    // is still on the dial)
    meter.setWaterFlow(0)
    r.waterMl = meter.pulsedWaterMl
  }
  await new Promise((res) => setTimeout(res, settleS * 1000))
  return r
}
