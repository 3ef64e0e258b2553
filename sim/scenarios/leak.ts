// A running toilet: 6 L/min for 8 s in an otherwise quiet house. LEAK_S = 4 s.
// The water meter is a pulse output, 0.1 L per pulse (1 pulse/s at 6 L/min), its contact closed
// for half of each pulse's turn (500 ms), counted by the board build's driver from the button
// events the simulator sends (as a board's button service sampling the pin every 9 ms); the stated
// maximum flow stays 30 L/min (5 pulses/s, well within the boards' pulse limits).
import { defineScenario } from "../src/scenario.js"

export default defineScenario({
  name: "leak",
  description: "continuous flow long enough to be a leak",
  profile: "idle",
  speed: 1,
  startHour: 3,
  durationS: 14,
  settings: { INTERVAL_S: 2, BATCH: 2, LEAK_S: 4, PULSES_PER_L: 10, MAX_FLOW_LMIN: 30 },
  meter: { water: "pulses", board: "citymeter_esp32c3", pulses: { widthMs: 500 } },
  events: [{ kind: "leak", at: 2, until: 10, flowMlMin: 6000 }],
})
