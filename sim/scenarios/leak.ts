// A running toilet: 6 L/min for 8 s in an otherwise quiet house. LEAK_S = 4 s.
import { defineScenario } from "../src/scenario.js"

export default defineScenario({
  name: "leak",
  description: "continuous flow long enough to be a leak",
  profile: "idle",
  speed: 1,
  startHour: 3,
  durationS: 14,
  settings: { INTERVAL_S: 1, BATCH: 2, LEAK_S: 4 },
  events: [{ kind: "leak", at: 2, until: 10, flowMlMin: 6000 }],
})
