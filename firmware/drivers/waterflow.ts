// Hall-effect / reed water-flow sensor on a GPIO: pulses → millilitres and flow rate, exposed as
// the citymeter Water Flow service (services/waterflow.md), exactly as the simulator provides it.
//
// DeviceScript polls GPIO edges every 100 ms, so this driver suits reed switches and low-rate
// sensors (≤ 5 pulses/s); a hall sensor at full flow (e.g. 450 pulses/L at 30 L/min = 225 Hz)
// needs a hardware counter whose count this driver reads instead of counting edges itself.
import * as ds from "@devicescript/core"
import { subscribeDigital } from "@devicescript/gpio"
import { SensorServer, startServer } from "@devicescript/server"

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

/** Ignores edges closer than `minGapMs` to the last accepted one (contact bounce). */
export class Debouncer {
    private last: number = undefined
    constructor(readonly minGapMs: number) {}
    accept(nowMs: number): boolean {
        if (this.last !== undefined && nowMs - this.last < this.minGapMs) return false
        this.last = nowMs
        return true
    }
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
        if (this.lastMs) this.rateMlMin = flowRateMlMin(this.pulses - this.lastPulses, nowMs - this.lastMs, this.pulsesPerL)
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

export interface WaterFlowOptions {
    pin: ds.InputPin
    pulsesPerL: number
    debounceMs?: number
}

export function startWaterFlow(o: WaterFlowOptions): FlowCounter {
    const counter = new FlowCounter(o.pulsesPerL)
    const debounce = new Debouncer(o.debounceMs === undefined ? 5 : o.debounceMs)
    subscribeDigital(o.pin, (v: ds.DigitalValue) => {
        if (v === 1 && debounce.accept(ds.millis())) counter.pulse()
    })
    setInterval(() => counter.updateRate(ds.millis()), 1000)
    startServer(new WaterFlowServer(counter))
    return counter
}
