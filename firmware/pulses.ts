// Pulse inputs (reed water meters, S0 electricity outputs) counted below JavaScript (issue 20).
//
// A board starts jacdac-c's button service on each pulse pin (boards/<id>.board.json "$services":
// flowPulse, s0Pulse). The service samples its pin in C every 9 ms (jacdac-c services/button.c,
// `jd_should_sample(&state->nextSample, 9000)`) and sends a DOWN event when the level turns active
// and an UP event, carrying how long it was active in ms, when it turns back. Its init reads the
// pin once, so the level at start is the baseline: an idle contact at boot sends nothing.
// jacdac-c sends each event three times (at once, +20 ms, +70 ms: source/interfaces/event_queue.c)
// under one 7-bit event counter, and the client drops the repeats (client/routing.c): the VM hands
// every other event to the role's _onPacket in a fiber of its own (devicescript
// runtime/devicescript/jdiface.c devs_jd_wake_role), so events are neither merged nor repeated.
//
// Counting: a DOWN is a pulse. An UP whose DOWN never arrived (lost) is a pulse too, unless the
// contact had been closed since before we listened (its length says so): the contact closed at
// boot is the baseline, not a pulse. A DOWN in the first EARLY_MS after we listen may be the
// service's init sending the level it found (jacdac retransmits it up to 70 ms later): it is
// counted at its UP, from the length, and only if it began after we listened.
//
// The simulator has no pins: it serves jacdac-ts button servers on the same roles and presses and
// releases them with the simulated pulse train (sim/src/meter.ts), so this code counts there too.
import * as ds from "@devicescript/core"

/** A DOWN this soon after listening may be the init's report of a contact already closed. */
export const EARLY_MS = 200

/** Pulses from a button service's DOWN and UP events; a pure state machine (tested in the VM). */
export class PulseEdges {
    /** Pulses counted. */
    pulses = 0
    /** DOWN events seen while the contact was already closed (its UP was lost). */
    lostUps = 0
    /** UP events whose DOWN never arrived, counted from their length. */
    lostDowns = 0
    private on = false
    private tentative = false
    /** `startMs`: when listening began (ds.millis()). */
    constructor(readonly startMs: number) {}

    /** The contact closed (DOWN event, at `nowMs`); true when that counted a pulse. */
    down(nowMs: number): boolean {
        if (this.on) this.lostUps = this.lostUps + 1
        this.on = true
        // possibly the level the service found at its start: decided at the UP, from the length
        this.tentative = nowMs - this.startMs < EARLY_MS
        if (this.tentative) return false
        this.pulses = this.pulses + 1
        return true
    }

    /** The contact opened (UP event at `nowMs`, closed for `pressMs`); true when that counted a pulse. */
    up(nowMs: number, pressMs: number): boolean {
        const wasOn = this.on
        const wasTentative = this.tentative
        this.on = false
        this.tentative = false
        if (wasOn && !wasTentative) return false // counted at its DOWN
        // no DOWN counted for this pulse: it counts if it began after we listened
        const began = nowMs - (pressMs > 0 ? pressMs : 0)
        if (began < this.startMs) return false
        if (!wasOn) this.lostDowns = this.lostDowns + 1
        this.pulses = this.pulses + 1
        return true
    }
}

/**
 * Counts the pulses of a board's pulse input (a button-service role) and calls `onPulse` for each.
 * Call it before any await, so no event finds no listener.
 */
export function countPulses(input: ds.Button, onPulse: () => void): PulseEdges {
    const edges = new PulseEdges(ds.millis())
    input.down.subscribe(() => {
        if (edges.down(ds.millis())) onPulse()
    })
    input.up.subscribe((pressMs: number) => {
        if (edges.up(ds.millis(), pressMs)) onPulse()
    })
    return edges
}
