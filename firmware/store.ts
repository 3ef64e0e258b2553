// What the meter keeps in flash (DeviceScript settings, the only persistence it has):
//   - a bounded FIFO of uplink frames waiting for the bridge's Ack, in a fixed ring of slots
//     "q0".."q<QUEUE_SLOTS-1>" overwritten in place (raw bytes; the settings store fails silently when
//     full, so its footprint must stay fixed: QUEUE_SLOTS slots x <= MAX_FRAME_BYTES + one state record),
//   - one state record "st" (JSON): ring positions, drop counter, monotonic totals and the raw
//     counter values they were last reconciled with.
//
// Flash writes: one slot and one state record per frame, nothing else. At 15-minute intervals and
// 4 intervals per frame that is 48 writes (~8 KB) a day. Acks cost no write: after a power cut,
// already-acknowledged frames may be sent again; the bridge stores them once.
// Totals are written with the frame that carries them. A power cut loses no consumption when the
// pulse counter keeps counting (its raw value is reconciled at boot), and at most one frame's
// worth of pulses (BATCH x INTERVAL_S, 1 h by default) when the counter restarts with the meter.
import * as ds from "@devicescript/core"
import { settings } from "@devicescript/settings"
import { MAX_FRAME_BYTES as FRAME_BYTES, QUEUE_SLOTS as SLOTS } from "./gen/tunables"
import { Uplink as UplinkF } from "./gen/wire"
import { PbReader } from "./pb"
import { KIND_ALARM, KIND_READINGS } from "./seal"

/**
 * Slots of the ring (proto/tunables.json storage.queueSlots): the full queue plus every other
 * setting at its largest must fit the smallest settings bank, the Pico W's 8 KB (checked at build
 * and config time, bridge/src/tunables.ts; README "Configuration" has the numbers per board).
 */
export const QUEUE_SLOTS = SLOTS
/** Largest frame a slot holds (a settings value above ~225 bytes crashes the VM). */
export const MAX_FRAME_BYTES = FRAME_BYTES

export interface PersistedState {
    /** Ring positions: head = oldest queued, tail = next free (both grow forever). */
    h: number
    t: number
    /** Frames dropped because the queue was full (oldest first). */
    d: number
    /** Monotonic totals and the raw counter values they include. */
    w: number
    rw: number
    rv: number
    e: number
    re: number
}

export interface QueuedFrame {
    pos: number
    boot: number
    seq: number
    /** Uplink body field number (10 readings, 12 alarm). */
    body: number
    frame: Buffer
    /** ds.millis() of the last send; 0 = not sent since boot/reconnect. */
    sentAt: number
    acked: boolean
}

/** Reads a raw settings value (readSetting() of @devicescript/settings is JSON-only). */
async function readRaw(key: string): Promise<Buffer> {
    const pkt = await ds.actionReport(
        settings,
        "get",
        async () => await settings.get(key),
        p => p.decode()[0] === key
    )
    const [, value] = pkt.decode()
    return value as Buffer
}

/**
 * A sealed frame's body is ciphertext, so its slot starts with the kind byte of its nonce
 * (seal.ts: 0x01 readings, 0x03 alarm) before the frame; an open frame's slot is the frame. No
 * Uplink starts with 0x01 or 0x03 (field 0 does not exist), so the two never mix up.
 */
export function slotValue(frame: Buffer, sealedKind: number): Buffer {
    if (!sealedKind) return frame
    const k = Buffer.alloc(1)
    k.setAt(0, "u8", sealedKind)
    return Buffer.concat(k, frame)
}

/** [frame, body field] of a slot's value. */
function fromSlot(v: Buffer): [Buffer, number] {
    const first = v.getAt(0, "u8")
    if (first === KIND_READINGS) return [v.slice(1), UplinkF.readings]
    if (first === KIND_ALARM) return [v.slice(1), UplinkF.alarm]
    return [v, 0]
}

/** [boot, seq, body field] of an Uplink frame. */
export function frameId(frame: Buffer): number[] {
    const r = new PbReader(frame)
    let boot = 0
    let seq = 0
    while (r.next()) {
        if (r.field === UplinkF.boot) boot = r.varint()
        else if (r.field === UplinkF.seq) seq = r.varint()
        else return [boot, seq, r.field]
    }
    return [boot, seq, 0]
}

export class MeterStore {
    state: PersistedState = { h: 0, t: 0, d: 0, w: -1, rw: -1, rv: -1, e: -1, re: -1 }
    /** Queued frames, oldest first (RAM mirror of the ring). */
    frames: QueuedFrame[] = []

    async load() {
        const s = await readRaw("st")
        if (s && s.length) {
            try {
                const o = JSON.parse(s.toString())
                if (typeof o.h === "number" && typeof o.t === "number") this.state = o
            } catch (e) {
                console.log("citymeter: state record unreadable; starting empty")
            }
        }
        for (let pos = this.state.h; pos < this.state.t; ++pos) {
            const raw = await readRaw(`q${pos % QUEUE_SLOTS}`)
            if (!raw || !raw.length) continue
            const [frame, sealedBody] = fromSlot(raw)
            const id = frameId(frame)
            const body = sealedBody ? sealedBody : id[2]
            this.frames.push({ pos, boot: id[0], seq: id[1], body, frame, sentAt: 0, acked: false })
        }
    }

    async saveState() {
        await settings.set("st", Buffer.from(JSON.stringify(this.state)))
    }

    /**
     * Queues a frame durably (slot, then state). When full, the oldest frame is dropped and counted.
     * `sealedKind`: the nonce kind byte of a sealed frame (its body is not readable), else 0.
     */
    async push(frame: Buffer, sealedKind: number = 0) {
        this.compact()
        if (this.state.t - this.state.h >= QUEUE_SLOTS) {
            this.frames.shift()
            this.state.h = this.state.h + 1
            this.state.d = this.state.d + 1
            console.log(`citymeter: queue full, dropped the oldest frame (${this.state.d} so far)`)
        }
        const pos = this.state.t
        const slot = `q${pos % QUEUE_SLOTS}`
        const value = slotValue(frame, sealedKind)
        if (value.length <= MAX_FRAME_BYTES) await settings.set(slot, value)
        else {
            console.log(`citymeter: frame of ${frame.length} B too large for flash; sent unpersisted`)
            await settings.delete(slot)
        }
        this.state.t = pos + 1
        const id = frameId(frame)
        const body = sealedKind === KIND_ALARM ? UplinkF.alarm : sealedKind === KIND_READINGS ? UplinkF.readings : id[2]
        this.frames.push({ pos, boot: id[0], seq: id[1], body, frame, sentAt: 0, acked: false })
        await this.saveState()
    }

    /**
     * Marks (boot, seq) acknowledged; the ring's head moves past acknowledged frames. Frames are
     * queued in (boot, seq) order, so an ack outside the queue's range is refused in O(1) (issue 9:
     * a flood of acks for frames the meter never queued).
     */
    ack(boot: number, seq: number): boolean {
        const n = this.frames.length
        if (n === 0) return false
        const first = this.frames[0]
        const last = this.frames[n - 1]
        if (boot < first.boot || (boot === first.boot && seq < first.seq)) return false
        if (boot > last.boot || (boot === last.boot && seq > last.seq)) return false
        for (const f of this.frames) {
            if (f.boot === boot && f.seq === seq) {
                f.acked = true
                this.compact()
                return true
            }
        }
        return false
    }

    private compact() {
        while (this.frames.length && this.frames[0].acked) {
            this.frames.shift()
        }
        this.state.h = this.frames.length ? this.frames[0].pos : this.state.t
    }

    queuedCount(): number {
        let n = 0
        for (const f of this.frames) if (!f.acked) n++
        return n
    }
}
