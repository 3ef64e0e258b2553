// Water pushed back through the meter: 12 L/min reverse for 3 s (BACKFLOW_ML 100 per interval).
import { defineScenario } from "../src/scenario.js"

export default defineScenario({
  name: "backflow",
  description: "reverse flow through the meter",
  profile: "idle",
  speed: 1,
  startHour: 3,
  durationS: 8,
  settings: { INTERVAL_S: 1, BATCH: 2, BACKFLOW_ML: 100 },
  events: [{ kind: "backflow", at: 2, until: 5, flowMlMin: 12000 }],
})
