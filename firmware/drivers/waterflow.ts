// Reed water meter pulse output: pulses → millilitres and flow rate, exposed as the citymeter Water
// Flow service (services/waterflow.md), which the meter program binds by role.
//
// The pulses are counted from a button service's DOWN/UP events (../pulses.ts): on a board the
// service samples the FLOW_PULSE pin in C every 9 ms, in the simulator the host presses and releases
// a button server with its pulse train. A hall sensor far past the board's limit (proto/tunables.json
// pulseInputs) needs a hardware counter whose count a driver reads instead.
import * as ds from "@devicescript/core"
import { SensorServer, startServer } from "@devicescript/server"
import { countPulses } from "../pulses"

const U32 = 4294967296

/** Volume of `pulses` pulses for a sensor of `pulsesPerL` (K-factor), in mL, rounded down. */
export function pulsesToMl(pulses: number, pulsesPerL: number): number {
    return Math.floor((pulses * 1000) / pulsesPerL)
}

/** Mean flow rate in mL/min from `pulses` counted over `dtMs`. */
export function flowRateMlMin(pulses: number, dtMs: number, pulsesPerL: number): number {
    if (dtMs <= 0) return 0
    return Math.round((pulses * 1000 * 60000) / (pulsesPerL * dtMs))
}

/** Pulse counter → cumulative mL (u32, wraps like the hardware counters behind the service). */
export class FlowCounter {
    pulses = 0
    private lastPulses = 0
    private lastMs = 0
    rateMlMin = 0
    /** Volume counted under earlier K-factors (a config downlink changed it), mL. */
    private baseMl = 0
    constructor(public pulsesPerL: number) {}
    pulse() {
        this.pulses = this.pulses + 1
    }
    /** New K-factor from now on: pulses already counted keep the volume they had. */
    setPulsesPerL(k: number) {
        if (k === this.pulsesPerL) return
        this.baseMl = this.baseMl + pulsesToMl(this.pulses, this.pulsesPerL)
        this.pulses = 0
        this.lastPulses = 0
        this.pulsesPerL = k
    }
    volumeMl(): number {
        // not `%`: DeviceScript's % works on 32-bit integers
        const ml = this.baseMl + pulsesToMl(this.pulses, this.pulsesPerL)
        return ml - Math.floor(ml / U32) * U32
    }
    /** Updates the flow rate from the pulses since the previous call. */
    updateRate(nowMs: number) {
        if (this.lastMs)
            this.rateMlMin = flowRateMlMin(this.pulses - this.lastPulses, nowMs - this.lastMs, this.pulsesPerL)
        this.lastPulses = this.pulses
        this.lastMs = nowMs
    }
}

class WaterFlowServer extends SensorServer implements ds.CitymeterWaterFlowServerSpec {
    constructor(private readonly counter: FlowCounter) {
        super(ds.CitymeterWaterFlow.spec)
    }
    reading() {
        return this.counter.volumeMl()
    }
    reverseVolume() {
        return 0 // a single-channel pulse sensor cannot tell the direction
    }
    flowRate() {
        return this.counter.rateMlMin
    }
}

/**
 * Counts a reed water meter's pulse output (a button-service role: the board's pin sampled in C,
 * or the simulator's button server) and serves the Water Flow role from the count.
 */
export function startWaterFlow(input: ds.Button, pulsesPerL: number): FlowCounter {
    const counter = new FlowCounter(pulsesPerL)
    countPulses(input, () => counter.pulse())
    setInterval(() => counter.updateRate(ds.millis()), 1000)
    startServer(new WaterFlowServer(counter))
    return counter
}
