// What the meter can really measure, beyond which sensor roles are bound (an alarm needs a
// sensor behind it). The simulator's sensors measure everything; a board's drivers (drivers/start.ts)
// say what they cannot: a reed pulse counter has no flow direction; an S0 pulse output gives energy
// only — no voltage (its driver reports a nominal 230.0 V) and no measured power (an estimate from
// the impulse gap). With an ADE7953 metering IC fitted, voltage and power are measured.
export const measures = {
    reverseFlow: true,
    voltage: true,
    power: true,
}
