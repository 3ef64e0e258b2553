// Pulse inputs (reed water meters, S0), counted the way DeviceScript 2.16 counts GPIO edges: the
// level is read every 100 ms and a change between two reads is an edge. @devicescript/gpio does
// exactly this for subscribeDigital (packages/gpio/src/pins.ts at v2.16.4, lines 43-65:
// `changeHandler` reads every subscribed pin's `value` in `setInterval(changeHandler, 100)` and
// emits when it differs from the last read). So a pulse is seen only if a read lands inside it
// (width >= 100 ms) and another in the gap after it: about 5 pulses/s at most (proto/tunables.json
// pulseInputs, config.ts maxPulseHz). Shorter or faster pulses are lost (aliasing), on a board as in the
// simulator: a board reads a pin, the simulator a Jacdac sensor with the contact level
// (services/pulseinputs.md), and both count through this code.
import * as ds from "@devicescript/core"
import { GPIO_POLL_MS } from "./gen/tunables"

/** A read this long after the previous one is logged (a pulse or a gap that short may be lost). */
const LATE_READ_MS = 140

/** Pulses in a level read at intervals: a read at `active` after one that was not. */
export class EdgeSampler {
    private last: number = undefined
    /** Pulses counted, and reads made. */
    pulses = 0
    reads = 0
    constructor(readonly active: number) {}
    /**
     * One read of the level; true when a pulse began since the previous read. The first read only
     * sets the baseline (pins.ts would report it as a change: a contact closed at start-up is not a
     * pulse).
     */
    sample(level: number): boolean {
        this.reads = this.reads + 1
        const prev = this.last
        this.last = level
        if (prev === undefined || level === prev || level !== this.active) return false
        this.pulses = this.pulses + 1
        return true
    }
}

/**
 * Reads `read()` every GPIO_POLL_MS and calls `onPulse` for each pulse seen (a level at `active`
 * after a read that was not). `read` is a pin's value on a board, the simulated contact in the VM.
 */
export function pollPulses(read: () => number | Promise<number>, active: number, onPulse: () => void): EdgeSampler {
    const s = new EdgeSampler(active)
    let lastMs = 0
    setInterval(async () => {
        const v = await read()
        const now = ds.millis()
        // a late read (a busy VM) can miss a pulse shorter than the gap: say so
        if (lastMs && now - lastMs > LATE_READ_MS)
            console.log(`citymeter: pulse input read late: ${now - lastMs} ms since the last`)
        lastMs = now
        if (s.sample(v)) onPulse()
    }, GPIO_POLL_MS)
    return s
}
