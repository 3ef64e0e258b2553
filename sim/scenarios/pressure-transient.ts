// A pump trip: line pressure falls by 300 kPa for 3 s (P_LOW_PA 200 kPa).
import { defineScenario } from "../src/scenario.js"

export default defineScenario({
  name: "pressure-transient",
  description: "a pressure drop below the low-pressure threshold and back",
  profile: "idle",
  speed: 1,
  startHour: 3,
  durationS: 8,
  settings: { INTERVAL_S: 1, BATCH: 2, P_LOW_PA: 200000 },
  events: [{ kind: "pressure", at: 2, until: 5, dropPa: 300000 }],
})
