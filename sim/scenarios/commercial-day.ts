// An office building's working day: flat demand 08:00-18:00, nothing at night.
import { defineScenario } from "../src/scenario.js"

export default defineScenario({
  name: "commercial-day",
  description: "24 simulated hours of commercial water demand",
  profile: "commercial",
  speed: 3600,
  startHour: 0,
  durationS: 24,
  settings: { INTERVAL_S: 1, BATCH: 4, BURST_MLMIN: 1_000_000_000, LEAK_S: 2_592_000, P_LOW_PA: 0 },
  events: [],
})
