// The meter loses power for 3 s during the morning peak; its counters keep counting.
import { defineScenario } from "../src/scenario.js"

export default defineScenario({
  name: "power-loss",
  description: "a power cut: the VM stops dead and boots again from flash",
  profile: "household",
  speed: 3600,
  startHour: 5,
  durationS: 14,
  settings: { INTERVAL_S: 1, BATCH: 2, BURST_MLMIN: 1_000_000_000, LEAK_S: 2_592_000, P_LOW_PA: 0 },
  events: [{ kind: "powerLoss", at: 4, until: 7 }],
})
