// The meter's queue of uplink frames in flash (DeviceScript settings, the only persistence it has): a
// bounded FIFO of frames waiting for the bridge's Ack, in a fixed ring of slots "q0".."q<QUEUE_SLOTS-1>"
// overwritten in place (raw bytes; the settings store fails silently when full, so its footprint must
// stay fixed: QUEUE_SLOTS slots of at most SLOT_STATE_BYTES + MAX_FRAME_BYTES). Each slot starts with
// the queue's state as it was when its frame was queued (queue-slot.ts has the layout): frames from
// the head, drop counter, monotonic totals and the raw counter values they include. A boot takes the
// state from the slot with the newest (boot, seq).
// The queue's settings keys (at most 13 characters) are written only here: meters in the field hold
// values under them, so they never change. Meters that ran the two-record layout also hold a state
// record "st" and a 27th slot: read once at boot, deleted after the first slot (takeover in load()).
// The boot counter, the sealing key and the downlink replay mark are flash-records.ts's; config.ts
// reads the provisioned identity and the tunables.
//
// Flash writes: one slot per frame, nothing else (it was a slot and a state record). At 15-minute
// intervals and 4 intervals per frame that is 24 writes (~5 KB) a day. Acks cost no write: after a
// power cut, frames acknowledged since the last slot may be sent again; the bridge stores them once.
// A write the store refuses (jacdac-c jd_fstor.c returns -3 when a value does not fit, and the
// settings service ignores it: services/settings.c line 60) is seen only by reading the value back
// (raw-settings.ts writeChecked): every slot is read back after its write. A frame whose slot did
// not come back stays in RAM (it is still sent) but is not durable; its slot still holds an older
// frame, which the (boot, seq) order check skips at boot, so a reboot never reloads it (issue 20).
// Refusals are counted (MeterStore.unstored) and announced in the next Birth.
// Totals are written with the frame that carries them. A power cut loses no consumption when the
// pulse counter keeps counting (its raw value is reconciled at boot), and at most one frame's
// worth of pulses (BATCH x INTERVAL_S, 1 h by default) when the counter restarts with the meter.
import { settings } from "@devicescript/settings"
import { MAX_FRAME_BYTES as FRAME_BYTES, QUEUE_SLOTS as SLOTS } from "./gen/tunables"
import { Uplink as UplinkField } from "./gen/wire"
import {
    KIND_OPEN,
    KIND_SEALED_ALARM,
    KIND_SEALED_READINGS,
    later,
    legacyState,
    noTotals,
    parseSlot,
    QUEUE_SLOTS_BEFORE,
    QueueState,
    Slot,
    slotValue,
    STATE_KEY,
    Totals,
} from "./queue-slot"
import { readRaw, writeChecked } from "./raw-settings"

/**
 * Slots of the ring (proto/tunables.json storage.queueSlots): the full queue, every other setting
 * at its largest, the runtime's own records and the room a slot's rewrite needs must fit the
 * smallest settings bank, the Pico W's 8,144 usable bytes (the budget, from jacdac-c jd_fstor.c:
 * bridge/src/tunables/storage-budget.ts storageBudget, checked at build and config time; README "Configuration"
 * has the numbers per board).
 */
export const QUEUE_SLOTS = SLOTS
/** Largest frame a slot holds after its state (a settings value above ~225 bytes crashes the VM). */
export const MAX_FRAME_BYTES = FRAME_BYTES

/** A new meter's state: an empty queue, no totals. */
function emptyState(): QueueState {
    return { head: 0, tail: 0, dropped: 0, totals: noTotals() }
}

/** The queue slot of ring position `pos`. */
function slotKey(pos: number): string {
    return `q${pos % QUEUE_SLOTS}`
}

/** What the meter knows of a frame it queues: its (boot, seq) and its Uplink body field. */
export interface FrameId {
    boot: number
    seq: number
    /** Uplink body field number (10 readings, 12 alarm). */
    body: number
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
    /** Its slot was read back from flash equal to what was written (or it was loaded from there). */
    durable: boolean
}

export class MeterStore {
    state: QueueState = emptyState()
    /** Queued frames, oldest first (RAM mirror of the ring). */
    frames: QueuedFrame[] = []
    /** The two-record layout's leftovers are still in flash ("st", q26): removed after the first slot. */
    private leftovers = false

    /** The frames whose slot came back from flash. */
    durableCount(): number {
        let n = 0
        for (const f of this.frames) if (f.durable) n++
        return n
    }

    /**
     * The state comes from the slot with the newest (boot, seq): it was written with the newest
     * frame. Positions are renumbered from that slot (only their order and ring index matter).
     */
    async load() {
        const slots: (Slot | undefined)[] = []
        let newest = -1
        let newestSlot: Slot | undefined = undefined
        for (let i = 0; i < QUEUE_SLOTS; ++i) {
            const s = parseSlot(await readRaw(`q${i}`))
            slots.push(s)
            if (s && s.queued > 0 && (!newestSlot || later(s, newestSlot))) {
                newest = i
                newestSlot = s
            }
        }
        const old = legacyState(await readRaw(STATE_KEY))
        this.leftovers = !!old
        let legacy = false
        if (newestSlot) {
            const s = newestSlot
            const tail = QUEUE_SLOTS + newest + 1
            this.state = { head: tail - s.queued, tail, dropped: s.dropped, totals: s.totals }
        } else if (old) {
            // a meter that ran the two-record layout: its totals and queue, once
            this.state = old
            legacy = true
            console.log(`citymeter: state taken over from the two-record layout (${old.tail - old.head} frames)`)
        }
        let last: Slot | undefined = undefined
        for (let pos = this.state.head; pos < this.state.tail; ++pos) {
            const s = legacy ? parseSlot(await readRaw(`q${pos % QUEUE_SLOTS_BEFORE}`)) : slots[pos % QUEUE_SLOTS]
            if (!s) continue
            // frames are queued in (boot, seq) order: an older one is a slot a refused write left stale
            if (last && !later(s, last)) {
                console.log(`citymeter: slot ${slotKey(pos)} holds an older frame (seq ${s.seq}); skipped`)
                continue
            }
            last = s
            // the old layout's frames are sent from RAM: the new ring overwrites their slots
            this.frames.push({
                pos,
                boot: s.boot,
                seq: s.seq,
                body: s.body,
                frame: s.frame,
                sentAt: 0,
                acked: false,
                durable: !legacy,
            })
        }
    }

    /** The totals saved with the newest frame (a copy). */
    savedTotals(): Totals {
        const t = this.state.totals
        return {
            waterMl: t.waterMl,
            waterRaw: t.waterRaw,
            reverseRaw: t.reverseRaw,
            energyWh: t.energyWh,
            energyRaw: t.energyRaw,
        }
    }

    /**
     * Queues a frame durably: one write, its slot, carrying the queue's state. When full, the oldest
     * frame is dropped and counted. `sealed`: the frame's body is ciphertext. `totals`: the totals
     * the frame carries, saved in the same write; without them the totals saved before go again.
     */
    async push(frame: Buffer, id: FrameId, sealed: boolean, totals?: Totals) {
        const st = this.state
        this.compact()
        if (st.tail - st.head >= QUEUE_SLOTS) {
            this.frames.shift()
            st.head = this.frames.length ? this.frames[0].pos : st.tail
            st.dropped = st.dropped + 1
            console.log(`citymeter: queue full, dropped the oldest frame (${st.dropped} so far)`)
        }
        const pos = st.tail
        const slot = slotKey(pos)
        st.tail = pos + 1
        if (totals) st.totals = totals
        const kind = !sealed ? KIND_OPEN : id.body === UplinkField.alarm ? KIND_SEALED_ALARM : KIND_SEALED_READINGS
        const value = slotValue(frame, kind, st.tail - st.head, st)
        let durable = false
        if (frame.length <= MAX_FRAME_BYTES) durable = await writeChecked(slot, value)
        else {
            console.log(`citymeter: frame of ${frame.length} B too large for flash; sent unpersisted`)
            await settings.delete(slot)
        }
        this.frames.push({ pos, boot: id.boot, seq: id.seq, body: id.body, frame, sentAt: 0, acked: false, durable })
        if (!durable && frame.length <= MAX_FRAME_BYTES)
            this.refused(`frame boot=${id.boot} seq=${id.seq} (${slot}, ${value.length} B)`)
        if (durable && this.leftovers) {
            // the state is in a slot now: the old record and the old ring's extra slots go, once
            this.leftovers = false
            await settings.delete(STATE_KEY)
            for (let i = QUEUE_SLOTS; i < QUEUE_SLOTS_BEFORE; ++i) await settings.delete(`q${i}`)
        }
    }

    /** Writes, or reads back differently, since boot: frames kept in RAM only. */
    unstored = 0

    private refused(what: string) {
        this.unstored = this.unstored + 1
        console.log(`citymeter: flash store refused ${what}: kept in RAM only (${this.unstored} since boot)`)
    }

    /**
     * Marks (boot, seq) acknowledged; the ring's head moves past acknowledged frames. Frames are
     * queued in (boot, seq) order, so an ack outside the queue's range is refused in O(1): a flood
     * of acks for frames the meter never queued stays cheap.
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
        this.state.head = this.frames.length ? this.frames[0].pos : this.state.tail
    }

    queuedCount(): number {
        let n = 0
        for (const f of this.frames) if (!f.acked) n++
        return n
    }
}
