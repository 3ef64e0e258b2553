// The pulse counting that boards and the simulator share (firmware/pulses.ts), fed the DOWN/UP
// events a button service sends (issue 20).
import { describe, expect, test } from "@devicescript/test"
import { EARLY_MS, PulseEdges } from "../pulses"

const START = 1000
/** A moment well after listening began. */
const LATER = START + EARLY_MS + 1000

describe("pulses from a button service's events", () => {
    test("each DOWN is one pulse; its UP adds nothing", () => {
        const e = new PulseEdges(START)
        for (let i = 0; i < 50; i++) {
            expect(e.down(LATER + i * 60)).toBe(true)
            expect(e.up(LATER + i * 60 + 30, 30)).toBe(false)
        }
        expect(e.pulses).toBe(50)
        expect(e.lostDowns + e.lostUps).toBe(0)
    })
    test("an idle contact at start sends no event: nothing is counted (no phantom at boot)", () => {
        const e = new PulseEdges(START)
        expect(e.pulses).toBe(0)
    })
    test("a contact closed at start: its DOWN (the service's init) and UP count nothing", () => {
        const e = new PulseEdges(START)
        // the init's DOWN, retransmitted after the role bound
        expect(e.down(START + 70)).toBe(false)
        // it opens 3 s later: closed for longer than we have listened
        expect(e.up(START + 3000, 3100)).toBe(false)
        expect(e.pulses).toBe(0)
        // the UP alone (its DOWN came before we listened)
        const f = new PulseEdges(START)
        expect(f.up(START + 500, 800)).toBe(false)
        expect(f.pulses).toBe(0)
    })
    test("a pulse that begins just after we listen counts once, at its UP", () => {
        const e = new PulseEdges(START)
        expect(e.down(START + 50)).toBe(false)
        expect(e.up(START + 80, 30)).toBe(true)
        expect(e.pulses).toBe(1)
        expect(e.down(LATER)).toBe(true)
        expect(e.up(LATER + 30, 30)).toBe(false)
        expect(e.pulses).toBe(2)
    })
    test("a lost DOWN: the UP counts the pulse; a lost UP: the next DOWN still counts", () => {
        const e = new PulseEdges(START)
        expect(e.down(LATER)).toBe(true)
        expect(e.up(LATER + 30, 30)).toBe(false)
        // DOWN of the second pulse lost
        expect(e.up(LATER + 90, 30)).toBe(true)
        // UP of the third pulse lost
        expect(e.down(LATER + 120)).toBe(true)
        expect(e.down(LATER + 180)).toBe(true)
        expect(e.up(LATER + 210, 30)).toBe(false)
        expect(e.pulses).toBe(4)
        expect(e.lostDowns).toBe(1)
        expect(e.lostUps).toBe(1)
    })
})
