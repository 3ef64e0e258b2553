// The broker is down for 6 s; the meter keeps measuring and replays its queue afterwards.
import { defineScenario } from "../src/scenario.js"

export default defineScenario({
  name: "broker-outage",
  description: "the MQTT broker goes away and comes back",
  profile: "household",
  speed: 3600,
  startHour: 6,
  durationS: 14,
  settings: { INTERVAL_S: 1, BATCH: 2, BURST_MLMIN: 1_000_000_000, LEAK_S: 2_592_000, P_LOW_PA: 0 },
  events: [{ kind: "brokerOutage", at: 3, until: 9 }],
})
