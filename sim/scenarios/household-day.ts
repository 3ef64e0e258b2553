// A household's day compressed to 24 s: one simulated hour per 1 s interval. Demand peaks in the
// morning and evening; line pressure sags with flow. Alarm thresholds are raised out of the way
// (the firmware sees the compressed rates).
import { defineScenario } from "../src/scenario.js"

export default defineScenario({
  name: "household-day",
  description: "24 simulated hours of household water and electricity demand",
  profile: "household",
  speed: 3600,
  startHour: 0,
  durationS: 24,
  settings: { INTERVAL_S: 1, BATCH: 4, BURST_MLMIN: 1_000_000_000, LEAK_S: 2_592_000, P_LOW_PA: 0 },
  events: [],
})
