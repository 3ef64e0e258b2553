// Every scenario, by name (the CLI's `sim --scenario` and the scenario tests use this list).
import backflow from "./backflow.js"
import brokerOutage from "./broker-outage.js"
import burst from "./burst.js"
import clockSkew from "./clock-skew.js"
import commercialDay from "./commercial-day.js"
import householdDay from "./household-day.js"
import leak from "./leak.js"
import powerLoss from "./power-loss.js"
import pressureTransient from "./pressure-transient.js"
import tamper from "./tamper.js"

export const scenarios = {
  "household-day": householdDay,
  "commercial-day": commercialDay,
  leak,
  burst,
  backflow,
  "pressure-transient": pressureTransient,
  tamper,
  "power-loss": powerLoss,
  "broker-outage": brokerOutage,
  "clock-skew": clockSkew,
}
