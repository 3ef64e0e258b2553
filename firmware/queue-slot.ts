// The layout of a queue slot (store.ts keeps the ring of them): one raw settings value per queued
// frame, the queue's state as it was when the frame was queued (frames from the head, drop counter,
// monotonic totals and the raw counter values they include), then the frame. Also how a slot is read
// back at boot (its frame's (boot, seq) and body field), and the two-record layout that came before
// (the state record "st" and slots of frames alone), read once to take over a meter that ran it.
import { SLOT_STATE_BYTES as STATE_BYTES } from "./gen/tunables"
import { Uplink as UplinkField } from "./gen/wire"
import { PbReader } from "./pb"
import { KIND_ALARM, KIND_READINGS } from "./seal"

/** Monotonic totals and the raw counter values they already include (-1: none yet). */
export interface Totals {
    /** Water register, mL; -1 on a new meter (it adopts its sensor's counter). */
    waterMl: number
    waterRaw: number
    reverseRaw: number
    /** Energy register, Wh; -1 on a new meter. */
    energyWh: number
    energyRaw: number
}

/** The queue's state: ring positions (head = oldest queued, tail = next free; both grow forever),
 * frames dropped because the queue was full, and the totals saved with the newest frame. */
export interface QueueState {
    head: number
    tail: number
    dropped: number
    totals: Totals
}

export function noTotals(): Totals {
    return { waterMl: -1, waterRaw: -1, reverseRaw: -1, energyWh: -1, energyRaw: -1 }
}

// ---- the slot record: the queue's state, then the frame (one write per frame)
//
// [0] 0x80 | kind << 5 | queued   kind: 0 open frame, 1 sealed readings, 2 sealed alarm; queued:
//                                  frames from the ring's head to this one, this one included
// [1] which totals are set (bit 0 waterMl, 1 waterRaw, 2 reverseRaw, 3 energyWh, 4 energyRaw)
// [2..4] dropped (u24, stops at 2^24 - 1)
// [5..11] waterMl, [12..18] energyWh (u56: totals reach 2^53)
// [19..22] waterRaw, [23..26] reverseRaw, [27..30] energyRaw (u32: the counters' own width)
// [31..] the Uplink frame
// Slots of the two-record layout (before this one) start with 0x01, 0x03 (a sealed frame's kind)
// or 0x08 (Uplink.boot's tag): never with the high bit set.
/** Bytes of state in front of each slot's frame (proto/tunables.json storage.slotStateBytes). */
export const SLOT_STATE_BYTES = STATE_BYTES
const NEW_SLOT = 0x80
export const KIND_OPEN = 0
export const KIND_SEALED_READINGS = 1
export const KIND_SEALED_ALARM = 2
const DROPPED_MAX = 16777215

function putLE(b: Buffer, at: number, bytes: number, v: number) {
    for (let i = 0; i < bytes; ++i) {
        const q = Math.floor(v / 256)
        b.setAt(at + i, "u8", v - q * 256)
        v = q
    }
}

function getLE(b: Buffer, at: number, bytes: number): number {
    let v = 0
    for (let i = bytes - 1; i >= 0; --i) v = v * 256 + b.getAt(at + i, "u8")
    return v
}

/** A slot's value: `queued` frames from the head to this one, the state, the frame. */
export function slotValue(frame: Buffer, kind: number, queued: number, st: QueueState): Buffer {
    const h = Buffer.alloc(SLOT_STATE_BYTES)
    const t = st.totals
    h.setAt(0, "u8", NEW_SLOT | (kind << 5) | queued)
    let set = 0
    if (t.waterMl >= 0) set = set | 1
    if (t.waterRaw >= 0) set = set | 2
    if (t.reverseRaw >= 0) set = set | 4
    if (t.energyWh >= 0) set = set | 8
    if (t.energyRaw >= 0) set = set | 16
    h.setAt(1, "u8", set)
    putLE(h, 2, 3, Math.min(st.dropped, DROPPED_MAX))
    if (t.waterMl >= 0) putLE(h, 5, 7, t.waterMl)
    if (t.energyWh >= 0) putLE(h, 12, 7, t.energyWh)
    if (t.waterRaw >= 0) putLE(h, 19, 4, t.waterRaw)
    if (t.reverseRaw >= 0) putLE(h, 23, 4, t.reverseRaw)
    if (t.energyRaw >= 0) putLE(h, 27, 4, t.energyRaw)
    return Buffer.concat(h, frame)
}

/** What a slot holds: its frame with (boot, seq, body), and the state when it is a new-layout slot. */
export interface Slot {
    frame: Buffer
    boot: number
    seq: number
    body: number
    /** Frames from the head to this one (new layout only). */
    queued: number
    dropped: number
    totals: Totals
}

export function parseSlot(v: Buffer): Slot | undefined {
    if (!v || !v.length) return undefined
    const first = v.getAt(0, "u8")
    let frame = v
    let body = 0
    let queued = -1
    let dropped = 0
    // the two-record layout kept its totals in the state record, not in a slot
    let totals = noTotals()
    if (first & NEW_SLOT) {
        if (v.length <= SLOT_STATE_BYTES) return undefined
        const kind = (first >> 5) & 3
        queued = first & 31
        const set = v.getAt(1, "u8")
        dropped = getLE(v, 2, 3)
        totals = {
            waterMl: set & 1 ? getLE(v, 5, 7) : -1,
            waterRaw: set & 2 ? getLE(v, 19, 4) : -1,
            reverseRaw: set & 4 ? getLE(v, 23, 4) : -1,
            energyWh: set & 8 ? getLE(v, 12, 7) : -1,
            energyRaw: set & 16 ? getLE(v, 27, 4) : -1,
        }
        frame = v.slice(SLOT_STATE_BYTES)
        if (kind === KIND_SEALED_READINGS) body = UplinkField.readings
        else if (kind === KIND_SEALED_ALARM) body = UplinkField.alarm
    } else if (first === KIND_READINGS) {
        frame = v.slice(1)
        body = UplinkField.readings
    } else if (first === KIND_ALARM) {
        frame = v.slice(1)
        body = UplinkField.alarm
    }
    const id = frameId(frame)
    return { frame, boot: id[0], seq: id[1], body: body ? body : id[2], queued, dropped, totals }
}

/** (boot, seq) of `a` after that of `b`. */
export function later(a: Slot, b: Slot): boolean {
    return a.boot > b.boot || (a.boot === b.boot && a.seq > b.seq)
}

// The two-record layout, read once to take over a meter that ran it: the state record "st" (JSON,
// one- and two-letter keys) and QUEUE_SLOTS_BEFORE slots of frames alone.
export const STATE_KEY = "st"
export const QUEUE_SLOTS_BEFORE = 27

/** The state of a two-record layout's record; undefined when it has none. */
export function legacyState(s: Buffer): QueueState | undefined {
    if (!s || !s.length) return undefined
    try {
        const o = JSON.parse(s.toString())
        if (typeof o.h !== "number" || typeof o.t !== "number") return undefined
        const n = (v: unknown) => (typeof v === "number" ? v : -1)
        return {
            head: o.h,
            tail: o.t,
            dropped: typeof o.d === "number" ? o.d : 0,
            totals: { waterMl: n(o.w), waterRaw: n(o.rw), reverseRaw: n(o.rv), energyWh: n(o.e), energyRaw: n(o.re) },
        }
    } catch {
        console.log("citymeter: old state record unreadable")
        return undefined
    }
}

/** [boot, seq, body field] of an Uplink frame. */
export function frameId(frame: Buffer): number[] {
    const r = new PbReader(frame)
    let boot = 0
    let seq = 0
    while (r.next()) {
        if (r.field === UplinkField.boot) boot = r.varint()
        else if (r.field === UplinkField.seq) seq = r.varint()
        else return [boot, seq, r.field]
    }
    return [boot, seq, 0]
}
