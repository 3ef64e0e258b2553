// What the meter can really measure, beyond which sensor roles are bound (issue 11: an alarm needs a
// sensor behind it). The simulator's sensors measure everything; a board's drivers (drivers/start.ts)
// say what they cannot: a reed pulse counter has no flow direction, an S0 pulse output carries no
// voltage (the S0 driver reports a nominal 230.0 V, which must not raise or clear voltage alarms).
export const measures = {
    reverseFlow: true,
    voltage: true,
}
