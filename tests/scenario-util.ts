// Shared by the scenario suites: a scenario's meter, and what the bridge stored for it.
import { expect } from "vitest"
import { SimMeter } from "../sim/src/meter.js"
import type { Scenario, ScenarioResult } from "../sim/src/scenario.js"
import { apiReadings, uid, waitFor, type ApiReading, type TestStack } from "./helpers.js"

export type Row = ApiReading
export interface Alarm {
  type: string
  active: boolean
}

export const storedRows = (stack: TestStack, meterId: string) => apiReadings<Row>(stack, meterId)

/** Waits until the last stored total equals the simulator's final counter, then checks continuity. */
export async function finalRows(stack: TestStack, r: ScenarioResult): Promise<Row[]> {
  const rows = await waitFor(
    `${r.meter.meterId}: final totals stored`,
    async () => {
      const rows = await storedRows(stack, r.meter.meterId)
      const sorted = [...rows].sort((a, b) => a.boot - b.boot || a.seq - b.seq || a.idx - b.idx)
      const last = sorted[sorted.length - 1]
      return last && last.waterTotalMl === r.waterMl && last.energyTotalWh === r.energyWh ? sorted : false
    },
    30_000,
    250,
  )
  // a pulse meter's first rows may carry no water: the board's driver serves the role once it runs
  const water = rows.filter((x) => x.waterTotalMl !== null)
  if (!r.meter.pulseTrain) expect(water.length).toBe(rows.length)
  for (let i = 1; i < water.length; i++)
    expect(water[i].waterTotalMl, `${r.meter.meterId} row ${i}`).toBe(water[i - 1].waterTotalMl + water[i].volumeMl)
  return rows
}

export function scenarioMeter(s: Scenario, mqttUrl: string) {
  const url = new URL(mqttUrl)
  return new SimMeter({
    water: "register", // a scenario's default (sim/src/scenario.ts Scenario.meter)
    ...s.meter,
    meterId: uid(s.name),
    settings: { MQTT_HOST: url.hostname, MQTT_PORT: Number(url.port), ...s.settings },
  })
}
