// What the meter keeps in flash (DeviceScript settings, the only persistence it has):
//   - a bounded FIFO of uplink frames waiting for the bridge's Ack, in a fixed ring of slots
//     "q0".."q<QUEUE_SLOTS-1>" overwritten in place (raw bytes; the settings store fails silently when
//     full, so its footprint must stay fixed: QUEUE_SLOTS slots x <= MAX_FRAME_BYTES + one state record),
//   - one state record "st" (JSON): ring positions, drop counter, monotonic totals and the raw
//     counter values they were last reconciled with,
//   - the boot counter "BOOT", the sealing key "SEAL_KEY" (provisioned; replaced by a key rotation)
//     and the nonce time of the newest config downlink accepted, "DL_MS".
// The settings keys (at most 13 characters) are written only here: meters in the field hold values
// under them, so they never change. config.ts reads the provisioned identity and the tunables.
//
// Flash writes: one slot and one state record per frame, nothing else. At 15-minute intervals and
// 4 intervals per frame that is 48 writes (~8 KB) a day. Acks cost no write: after a power cut,
// already-acknowledged frames may be sent again; the bridge stores them once.
// A write the store refuses (jacdac-c jd_fstor.c returns -3 when a value does not fit, and the
// settings service ignores it: services/settings.c line 60) is seen only by reading the value back:
// every slot and state record is read back after its write. A frame whose slot did not come back
// stays in RAM (it is still sent) but is not durable, and the state record's tail never passes it,
// so a reboot never reloads the old frame its slot still holds (issue 20). Refusals are counted
// (MeterStore.unstored) and announced in the next Birth.
// Totals are written with the frame that carries them. A power cut loses no consumption when the
// pulse counter keeps counting (its raw value is reconciled at boot), and at most one frame's
// worth of pulses (BATCH x INTERVAL_S, 1 h by default) when the counter restarts with the meter.
import * as ds from "@devicescript/core"
import { randomBuffer } from "@devicescript/crypto"
import { readSetting, settings, writeSetting } from "@devicescript/settings"
import { MAX_FRAME_BYTES as FRAME_BYTES, QUEUE_SLOTS as SLOTS } from "./gen/tunables"
import { Uplink as UplinkF } from "./gen/wire"
import { PbReader } from "./pb"
import { KIND_ALARM, KIND_READINGS } from "./seal"

/**
 * Slots of the ring (proto/tunables.json storage.queueSlots): the full queue, every other setting
 * at its largest, the runtime's own records and the room a slot's rewrite needs must fit the
 * smallest settings bank, the Pico W's 8,144 usable bytes (the budget, from jacdac-c jd_fstor.c:
 * bridge/src/tunables.ts storageBudget, checked at build and config time; README "Configuration"
 * has the numbers per board).
 */
export const QUEUE_SLOTS = SLOTS
/** Largest frame a slot holds (a settings value above ~225 bytes crashes the VM). */
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

/** The state record: ring positions (head = oldest queued, tail = next free; both grow forever),
 * frames dropped because the queue was full, and the totals saved with the newest frame. */
export interface QueueState {
    head: number
    tail: number
    dropped: number
    totals: Totals
}

/** A new meter's state: an empty queue, no totals. */
function emptyState(): QueueState {
    return {
        head: 0,
        tail: 0,
        dropped: 0,
        totals: { waterMl: -1, waterRaw: -1, reverseRaw: -1, energyWh: -1, energyRaw: -1 },
    }
}

// The state record in flash: JSON under STATE_KEY with one- and two-letter keys (settings values
// are small, and meters in the field hold records written with these keys: never rename them).
const STATE_KEY = "st"

/** The record as flash holds it; a damaged or older record may lack any field. */
interface StateRecord {
    h?: number
    t?: number
    d?: number
    w?: number
    rw?: number
    rv?: number
    e?: number
    re?: number
}

function toRecord(s: QueueState): StateRecord {
    const t = s.totals
    return {
        h: s.head,
        t: s.tail,
        d: s.dropped,
        w: t.waterMl,
        rw: t.waterRaw,
        rv: t.reverseRaw,
        e: t.energyWh,
        re: t.energyRaw,
    }
}

function numberOr(v: unknown, otherwise: number): number {
    return typeof v === "number" ? v : otherwise
}

/** The state of a record; undefined when it has no ring positions. */
function fromRecord(o: StateRecord): QueueState {
    if (typeof o.h !== "number" || typeof o.t !== "number") return undefined
    return {
        head: o.h,
        tail: o.t,
        dropped: numberOr(o.d, 0),
        totals: {
            waterMl: numberOr(o.w, -1),
            waterRaw: numberOr(o.rw, -1),
            reverseRaw: numberOr(o.rv, -1),
            energyWh: numberOr(o.e, -1),
            energyRaw: numberOr(o.re, -1),
        },
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

/** The nonce kind byte of a sealed frame's body (seal.ts). */
function sealedKindOf(body: number): number {
    return body === UplinkF.alarm ? KIND_ALARM : KIND_READINGS
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
    state: QueueState = emptyState()
    /** Queued frames, oldest first (RAM mirror of the ring). */
    frames: QueuedFrame[] = []

    /** The frames whose slot came back from flash. */
    durableCount(): number {
        let n = 0
        for (const f of this.frames) if (f.durable) n++
        return n
    }

    async load() {
        const s = await readRaw(STATE_KEY)
        if (s && s.length) {
            try {
                const loaded = fromRecord(JSON.parse(s.toString()))
                if (loaded) this.state = loaded
            } catch {
                console.log("citymeter: state record unreadable; starting empty")
            }
        }
        let last: number[] = [0, 0]
        for (let pos = this.state.head; pos < this.state.tail; ++pos) {
            const raw = await readRaw(slotKey(pos))
            if (!raw || !raw.length) continue
            const [frame, sealedBody] = fromSlot(raw)
            const id = frameId(frame)
            // frames are queued in (boot, seq) order: an older one is a slot a refused write left stale
            if (id[0] < last[0] || (id[0] === last[0] && id[1] <= last[1])) {
                console.log(`citymeter: slot ${slotKey(pos)} holds an older frame (seq ${id[1]}); skipped`)
                continue
            }
            last = id
            const body = sealedBody ? sealedBody : id[2]
            this.frames.push({ pos, boot: id[0], seq: id[1], body, frame, sentAt: 0, acked: false, durable: true })
        }
    }

    /**
     * Writes the state record with the ring's tail at the first frame that is not durable (a reboot
     * then reloads durable frames only), and reads it back: false when the store refused it.
     */
    async saveState(): Promise<boolean> {
        const rec = toRecord(this.state)
        for (const f of this.frames)
            if (!f.durable) {
                rec.t = f.pos
                break
            }
        return await writeChecked(STATE_KEY, Buffer.from(JSON.stringify(rec)))
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
     * Queues a frame durably (slot, then state). When full, the oldest frame is dropped and counted.
     * `sealed`: the frame's body is ciphertext (its slot then starts with the body's nonce kind).
     * `totals`: the totals the frame carries, saved in the same state write; without them the
     * state keeps the totals saved before.
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
        const value = slotValue(frame, sealed ? sealedKindOf(id.body) : 0)
        let durable = false
        if (value.length <= MAX_FRAME_BYTES) durable = await writeChecked(slot, value)
        else {
            console.log(`citymeter: frame of ${frame.length} B too large for flash; sent unpersisted`)
            await settings.delete(slot)
        }
        st.tail = pos + 1
        if (totals) st.totals = totals
        this.frames.push({ pos, boot: id.boot, seq: id.seq, body: id.body, frame, sentAt: 0, acked: false, durable })
        if (!durable && value.length <= MAX_FRAME_BYTES)
            this.refused(`frame boot=${id.boot} seq=${id.seq} (${slot}, ${value.length} B)`)
        if (!(await this.saveState())) this.refused(`state record after seq=${id.seq}`)
    }

    /** Writes, or reads back differently, since boot: frames kept in RAM only, state records not saved. */
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
