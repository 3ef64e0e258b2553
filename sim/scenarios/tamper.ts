// The case is opened for 2 s, then a magnet is held to the meter for 2 s.
import { defineScenario } from "../src/scenario.js"

export default defineScenario({
  name: "tamper",
  description: "case tamper switch, then magnetic tamper",
  profile: "idle",
  speed: 1,
  startHour: 3,
  durationS: 10,
  settings: { INTERVAL_S: 1, BATCH: 2 },
  events: [
    { kind: "tamper", at: 2, until: 4 },
    { kind: "magnet", at: 6, until: 8 },
  ],
})
