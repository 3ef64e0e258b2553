// A burst pipe: 150 L/min for 2 s (BURST_MLMIN 60 L/min), too short to count as a leak.
import { defineScenario } from "../src/scenario.js"

export default defineScenario({
  name: "burst",
  description: "very high flow for a short time",
  profile: "idle",
  speed: 1,
  startHour: 3,
  durationS: 8,
  settings: { INTERVAL_S: 1, BATCH: 2, LEAK_S: 60, BURST_MLMIN: 60000 },
  events: [{ kind: "burst", at: 2, until: 4, flowMlMin: 150000 }],
})
