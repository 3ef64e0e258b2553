// Reed water meter on a GPIO: pulses → millilitres and flow rate, exposed as the citymeter Water
// Flow service (services/waterflow.md), which the meter program binds by role.
//
// The pin is read every 100 ms (../pulses.ts, as DeviceScript's own GPIO edge polling), so this
// driver suits reed outputs (pulses >= 100 ms, <= 5 pulses/s); a hall sensor at full flow (e.g. 450
// pulses/L at 30 L/min = 225 Hz) needs a hardware counter whose count a driver reads instead.
// In the simulator the same driver counts the host's simulated contact (startSimulatedWaterFlow).
import * as ds from "@devicescript/core"
import { digitalRead } from "@devicescript/gpio"
import { SensorServer, startServer } from "@devicescript/server"
import { pollPulses } from "../pulses"

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

export interface WaterFlowOptions {
    /** The meter's pulse output on a board: a contact to ground against the pin's pull-up (active low). */
    pin?: ds.InputPin
    /** Or the contact level from elsewhere (the simulator): 1 while a pulse is on. */
    level?: () => Promise<number>
    pulsesPerL: number
    debounceMs?: number
}

export function startWaterFlow(o: WaterFlowOptions): FlowCounter {
    const counter = new FlowCounter(o.pulsesPerL)
    const debounce = new Debouncer(o.debounceMs === undefined ? 5 : o.debounceMs)
    const pin = o.pin
    const read = pin ? () => digitalRead(pin) as number : o.level
    pollPulses(read, pin ? 0 : 1, () => {
        if (debounce.accept(ds.millis())) counter.pulse()
    })
    setInterval(() => counter.updateRate(ds.millis()), 1000)
    startServer(new WaterFlowServer(counter))
    return counter
}

/**
 * The simulator has no pins (drivers/start.ts). When the host simulates the meter's pulse output
 * (services/pulseinputs.md, bit 0), this driver counts it exactly as on a board, and serves the
 * Water Flow role from its count; until that sensor appears nothing starts, so a host that serves
 * the Water Flow service itself is bound as before. `started` gets the running driver.
 */
export function startSimulatedWaterFlow(pulsesPerL: number, started: (f: FlowCounter) => void) {
    const levels = new ds.CitymeterPulseInputs()
    let flow: FlowCounter = undefined
    levels.binding().subscribe((bound: boolean) => {
        if (!bound || flow) return
        // the read returns the VM's cached report (refreshed by the host at every level change)
        flow = startWaterFlow({ level: async () => (await levels.reading.read()) & 1, pulsesPerL })
        started(flow)
    })
}
