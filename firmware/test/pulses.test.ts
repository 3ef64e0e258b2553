// The edge counting that board and simulator share (firmware/pulses.ts), fed sampled levels.
import { describe, expect, test } from "@devicescript/test"
import { EdgeSampler } from "../pulses"

/** Levels a 100 ms poller reads from a train of `widthMs` pulses every `periodMs`, first at `offsetMs`. */
function polled(widthMs: number, periodMs: number, offsetMs: number, durationMs: number): number[] {
    const out: number[] = []
    for (let t = offsetMs; t < durationMs; t += 100) {
        const inPeriod = t - Math.floor(t / periodMs) * periodMs
        out.push(t >= periodMs && inPeriod < widthMs ? 1 : 0)
    }
    return out
}

function count(levels: number[], active: number): number {
    const s = new EdgeSampler(active)
    for (const v of levels) s.sample(v)
    return s.pulses
}

describe("pulse edges from a level read every 100 ms", () => {
    test("a pulse is its change to the active level; the first read is only the baseline", () => {
        const s = new EdgeSampler(1)
        expect(s.sample(1)).toBe(false) // closed at start-up: not a pulse
        expect(s.sample(0)).toBe(false)
        expect(s.sample(1)).toBe(true)
        expect(s.sample(1)).toBe(false) // still the same pulse
        expect(s.sample(0)).toBe(false)
        expect(s.sample(1)).toBe(true)
        expect(s.pulses).toBe(2)
        expect(s.reads).toBe(6)
    })
    test("active low (a contact to ground against a pull-up) counts the closures", () => {
        expect(count([1, 0, 0, 1, 1, 0, 1], 0)).toBe(2)
    })
    test("150 ms pulses at 2.5 Hz: every pulse counts, whatever the phase", () => {
        for (let off = 0; off < 100; off += 30) expect(count(polled(150, 400, off, 4400), 1)).toBe(10)
    })
    test("40 ms pulses at 2.5 Hz: only reads whose phase falls in the 40 ms see them", () => {
        // the period is 4 reads, so a phase sees every pulse or none: 2 of 5 phases see all 10
        let seen = 0
        for (let off = 0; off < 100; off += 20) seen += count(polled(40, 400, off, 4400), 1)
        expect(seen).toBe(2 * 10)
    })
    test("10 Hz: every read lands at the same phase, 29 pulses look like one long one", () => {
        expect(count(polled(60, 100, 30, 3000), 1)).toBe(1)
    })
})
