// A small city over three and a half simulated days (issue 25 item 6), for the water-balance
// tests: two DMAs of an inflow meter and three customers each. In the north a customer-side leak
// of 0.5 L/min runs from the start (that meter never reaches zero at night) and a 5 L/min pipe
// leak (300 L/h, six times the night-flow alarm's 50 L/h rise) begins on day 2 at 10:00 UTC; in
// the south one household's meter sticks at midnight of day 1 and another's bypass takes half its
// water from the start. Time 0 is a UTC midnight, so the night window (02:00-04:00 UTC) is the
// simulated night. A city is not a single-meter Scenario: it is not in ./index.ts.
import { smallCity } from "../src/city.js"

export default smallCity({ seed: 25, startHour: 0, pipeLeakFromH: 58, stuckFromH: 24 })

/**
 * The city `npm start` runs (scripts/demo.ts): the same layout at 60x from 06:00 simulated, its
 * faults early enough to show within minutes: the bypass and the night leak from the start, the
 * stuck meter after a simulated hour (a real minute), the pipe leak after two.
 */
export const demoCity = (meterId: (i: number) => string) =>
  smallCity({ seed: 25, startHour: 6, meterId, pipeLeakFromH: 2, stuckFromH: 1 })
