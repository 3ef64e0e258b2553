// A bad time source puts the meter's clock an hour behind; the bridge notices and corrects it.
import { defineScenario } from "../src/scenario.js"

export default defineScenario({
  name: "clock-skew",
  description: "meter clock an hour off, corrected by the bridge",
  profile: "idle",
  speed: 1,
  startHour: 3,
  durationS: 10,
  settings: { INTERVAL_S: 1, BATCH: 2 },
  events: [{ kind: "clockSkew", at: 2, offsetS: -3600 }],
})
