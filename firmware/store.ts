// What the meter keeps in flash (DeviceScript settings, the only persistence it has):
//   - a bounded FIFO of uplink frames waiting for the bridge's Ack, in a fixed ring of slots
//     "q0".."q<QUEUE_SLOTS-1>" overwritten in place (raw bytes; the settings store fails silently when
//     full, so its footprint must stay fixed: QUEUE_SLOTS slots of at most SLOT_STATE_BYTES +
//     MAX_FRAME_BYTES). Each slot starts with the queue's state as it was when its frame was queued:
//     frames from the head, drop counter, monotonic totals and the raw counter values they include.
//     A boot takes the state from the slot with the newest (boot, seq).
//   - the boot counter "BOOT", the sealing key "SEAL_KEY" (provisioned; replaced by a key rotation)
//     and the nonce time of the newest config downlink accepted, "DL_MS".
// The settings keys (at most 13 characters) are written only here: meters in the field hold values
// under them, so they never change. Meters that ran the two-record layout also hold a state record
// "st" and a 27th slot: read once at boot, deleted after the first slot (takeover in load()).
// config.ts reads the provisioned identity and the tunables.
//
// Flash writes: one slot per frame, nothing else (it was a slot and a state record). At 15-minute
// intervals and 4 intervals per frame that is 24 writes (~5 KB) a day. Acks cost no write: after a
// power cut, frames acknowledged since the last slot may be sent again; the bridge stores them once.
// A write the store refuses (jacdac-c jd_fstor.c returns -3 when a value does not fit, and the
// settings service ignores it: services/settings.c line 60) is seen only by reading the value back:
// every slot is read back after its write. A frame whose slot did not come back stays in RAM (it is
// still sent) but is not durable; its slot still holds an older frame, which the (boot, seq) order
// check skips at boot, so a reboot never reloads it (issue 20). Refusals are counted
// (MeterStore.unstored) and announced in the next Birth.
// Totals are written with the frame that carries them. A power cut loses no consumption when the
// pulse counter keeps counting (its raw value is reconciled at boot), and at most one frame's
// worth of pulses (BATCH x INTERVAL_S, 1 h by default) when the counter restarts with the meter.
import * as ds from "@devicescript/core"
import { randomBuffer } from "@devicescript/crypto"
import { readSetting, settings, writeSetting } from "@devicescript/settings"
import { MAX_FRAME_BYTES as FRAME_BYTES, QUEUE_SLOTS as SLOTS, SLOT_STATE_BYTES as STATE_BYTES } from "./gen/tunables"
import { Uplink as UplinkF } from "./gen/wire"
import { PbReader } from "./pb"
import { KIND_ALARM, KIND_READINGS } from "./seal"

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

function noTotals(): Totals {
    return { waterMl: -1, waterRaw: -1, reverseRaw: -1, energyWh: -1, energyRaw: -1 }
}

/** A new meter's state: an empty queue, no totals. */
function emptyState(): QueueState {
    return { head: 0, tail: 0, dropped: 0, totals: noTotals() }
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
const KIND_OPEN = 0
const KIND_SEALED_READINGS = 1
const KIND_SEALED_ALARM = 2
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
interface Slot {
    frame: Buffer
    boot: number
    seq: number
    body: number
    /** Frames from the head to this one (new layout only). */
    queued: number
    dropped: number
    totals: Totals
}

function parseSlot(v: Buffer): Slot | undefined {
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
        if (kind === KIND_SEALED_READINGS) body = UplinkF.readings
        else if (kind === KIND_SEALED_ALARM) body = UplinkF.alarm
    } else if (first === KIND_READINGS) {
        frame = v.slice(1)
        body = UplinkF.readings
    } else if (first === KIND_ALARM) {
        frame = v.slice(1)
        body = UplinkF.alarm
    }
    const id = frameId(frame)
    return { frame, boot: id[0], seq: id[1], body: body ? body : id[2], queued, dropped, totals }
}

/** (boot, seq) of `a` after that of `b`. */
function later(a: Slot, b: Slot): boolean {
    return a.boot > b.boot || (a.boot === b.boot && a.seq > b.seq)
}

// The two-record layout, read once to take over a meter that ran it: the state record "st" (JSON,
// one- and two-letter keys) and QUEUE_SLOTS_BEFORE slots of frames alone.
const STATE_KEY = "st"
const QUEUE_SLOTS_BEFORE = 27

/** The state of a two-record layout's record; undefined when it has none. */
function legacyState(s: Buffer): QueueState | undefined {
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

/** Reads a raw settings value (readSetting() of @devicescript/settings is JSON-only). */
export async function readRaw(key: string): Promise<Buffer> {
    const pkt = await ds.actionReport(
        settings,
        "get",
        async () => await settings.get(key),
        (p) => p.decode()[0] === key,
    )
    const [, value] = pkt.decode()
    return value as Buffer
}

/**
 * Writes a raw settings value and reads it back: true when flash holds exactly these bytes. The
 * settings service handles commands in order, so the read answers after the write was handled
 * (and after the runtime synced its flash, jd_fstor.c line 332): a power cut after this finds it.
 */
export async function writeChecked(key: string, value: Buffer): Promise<boolean> {
    await settings.set(key, value)
    const back = await readRaw(key)
    return !!back && back.length === value.length && back.toString("hex") === value.toString("hex")
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
        const kind = !sealed ? KIND_OPEN : id.body === UplinkF.alarm ? KIND_SEALED_ALARM : KIND_SEALED_READINGS
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

// ---- the boot counter, the sealing key and the downlink replay mark

const BOOT_KEY = "BOOT"
const SEAL_KEY = "SEAL_KEY"
const NEWEST_DOWNLINK_KEY = "DL_MS"

/**
 * A meter that has no boot counter (first start, flash wipe, re-flash) starts it at a random value
 * in [2^21, 2^28) (proto Uplink.boot): a new life never reuses an earlier one's (boot, seq), so the
 * bridge never takes its frames for duplicates, and sealed nonces never repeat.
 */
function firstBoot(): number {
    const r = randomBuffer(4)
    let v = 0
    for (let i = 0; i < 4; ++i) v = v * 256 + r.getAt(i, "u8")
    const span = 2 ** 28 - 2 ** 21
    return 2 ** 21 + (v - Math.floor(v / span) * span)
}

/** Counts this boot in flash and returns its number (proto Uplink.boot). */
export async function nextBoot(): Promise<number> {
    const lastBoot = await readSetting<number>(BOOT_KEY, 0)
    const boot = lastBoot > 0 ? lastBoot + 1 : firstBoot()
    await writeSetting(BOOT_KEY, boot)
    return boot
}

/** The sealing key as hex ("" when the meter is not provisioned with one). */
export async function loadSealKey(): Promise<string> {
    return await readSetting<string>(SEAL_KEY, "")
}

export async function saveSealKey(hex: string) {
    await writeSetting(SEAL_KEY, hex)
}

/** Nonce time (ms) of the newest config downlink accepted; 0 when none was. */
export async function loadNewestDownlinkMs(): Promise<number> {
    return await readSetting<number>(NEWEST_DOWNLINK_KEY, 0)
}

export async function saveNewestDownlinkMs(ms: number) {
    await writeSetting(NEWEST_DOWNLINK_KEY, ms)
}
