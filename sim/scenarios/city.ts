// A small city over three and a half simulated days (issue 25 item 6), for the water-balance
// tests: two DMAs of an inflow meter and three customers each. In the north a customer-side leak
// of 0.5 L/min runs from the start (that meter never reaches zero at night) and a 5 L/min pipe
// leak (300 L/h, six times the night-flow alarm's 50 L/h rise) begins on day 2 at 10:00 UTC; in
// the south one household's meter sticks at midnight of day 1, and on day 1 at 06:00 a bypass is
// fitted before another's meter (its case opened for 15 minutes: a tamper event) and takes 60 % of
// its water from then on. Time 0 is a UTC midnight, so the night window (02:00-04:00 UTC) is the
// simulated night. A city is not a single-meter Scenario: it is not in ./index.ts.
import { smallCity } from "../src/city.js"

export default smallCity({ seed: 25, startHour: 0, pipeLeakFromH: 58, stuckFromH: 24, bypassFromH: 30 })

/**
 * The city `npm start` runs (scripts/demo.ts): the same layout at 60x from 06:00 simulated, its
 * faults early enough to show within minutes: the night leak from the start, the
 * bypass after half a simulated hour (half a real minute; its case opened for a quarter of an hour),
 * the stuck meter after an hour, the pipe leak after two.
 */
export const demoCity = (meterId: (i: number) => string) =>
  smallCity({ seed: 25, startHour: 6, meterId, pipeLeakFromH: 2, stuckFromH: 1, bypassFromH: 0.5 })
