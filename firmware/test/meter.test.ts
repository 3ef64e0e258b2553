// Firmware unit tests for counters, interval statistics, the flash queue and the clock, in the VM.
import * as ds from "@devicescript/core"
import { settings } from "@devicescript/settings"
import { describe, expect, test } from "@devicescript/test"
import { Clock } from "../clock"
import { encodeUplink } from "../frames"
import { Uplink as UplinkField } from "../gen/wire"
import { SLOT_STATE_BYTES } from "../queue-slot"
import { readRaw } from "../raw-settings"
import { Stats, Totalizer, counterDelta } from "../sampler"
import { MAX_FRAME_BYTES, MeterStore, QUEUE_SLOTS } from "../store"

describe("counters", () => {
    test("plain increase", () => {
        expect(counterDelta(10, 25)).toBe(15)
        expect(counterDelta(7, 7)).toBe(0)
    })
    test("u32 wrap counts through zero", () => {
        expect(counterDelta(2 ** 32 - 10, 5)).toBe(15)
        expect(counterDelta(2 ** 32 - 1, 0)).toBe(1)
    })
    test("a sensor restart counts from zero", () => {
        expect(counterDelta(1000, 30)).toBe(30)
        expect(counterDelta(2 ** 31 - 1, 5)).toBe(5)
    })
    test("a new meter adopts the sensor register", () => {
        const t = new Totalizer(-1)
        expect(t.update(500)).toBe(0)
        expect(t.total).toBe(500)
        expect(t.update(650)).toBe(150)
        expect(t.total).toBe(650)
    })
    test("a persisted total continues from the reconciled raw value", () => {
        const t = new Totalizer(10000)
        t.lastRaw = 200
        expect(t.update(250)).toBe(50)
        expect(t.total).toBe(10050)
    })
    test("totals beyond 2^32 stay exact", () => {
        const t = new Totalizer(2 ** 40)
        t.lastRaw = 2 ** 32 - 3
        t.update(4)
        expect(t.total).toBe(2 ** 40 + 7)
    })
})

describe("interval statistics", () => {
    test("min, max and rounded mean", () => {
        const s = new Stats()
        s.add(100)
        s.add(101)
        s.add(99)
        s.add(104)
        expect(s.min).toBe(99)
        expect(s.max).toBe(104)
        expect(s.mean()).toBe(101)
    })
    test("a constant input gives exactly that value", () => {
        const s = new Stats()
        for (let i = 0; i < 7; ++i) s.add(312000)
        expect(s.mean()).toBe(312000)
        expect(s.min).toBe(312000)
        expect(s.max).toBe(312000)
    })
    test("no samples gives zero", () => {
        expect(new Stats().mean()).toBe(0)
    })
})

function frame(seq: number) {
    return encodeUplink({ boot: 1, seq, readings: { intervalS: 60, water: { volumeMl: [seq] } } })
}

describe("flash queue", () => {
    test("survives a reload; when full the oldest frame is dropped and counted", async () => {
        const s = new MeterStore()
        await s.load()
        const n = QUEUE_SLOTS + 3
        for (let seq = 1; seq <= n; ++seq) await s.push(frame(seq), { boot: 1, seq, body: UplinkField.readings }, false)
        expect(s.state.dropped).toBe(3)
        expect(s.frames.length).toBe(QUEUE_SLOTS)
        expect(s.frames[0].seq).toBe(4)

        const r = new MeterStore()
        await r.load()
        expect(r.frames.length).toBe(QUEUE_SLOTS)
        expect(r.frames[0].seq).toBe(4)
        expect(r.frames[QUEUE_SLOTS - 1].seq).toBe(n)
        expect(r.frames[0].frame.toString("hex")).toBe(frame(4).toString("hex"))
        expect(r.state.dropped).toBe(3)
        expect(r.frames[0].body).toBe(UplinkField.readings)
    })
    test("acknowledged frames leave from the head, in any order", async () => {
        const s = new MeterStore()
        await s.load()
        const head = s.frames[0].seq
        expect(s.ack(1, head + 1)).toBe(true)
        expect(s.frames[0].seq).toBe(head) // the head is still unacknowledged
        expect(s.ack(1, head)).toBe(true)
        expect(s.frames[0].seq).toBe(head + 2)
        expect(s.queuedCount()).toBe(QUEUE_SLOTS - 2)
        expect(s.ack(2, head + 5)).toBe(false) // another boot's seq is not this frame
        // acks cost no write: the next frame's slot carries the head past them
        const next = s.frames[s.frames.length - 1].seq + 1
        await s.push(frame(next), { boot: 1, seq: next, body: UplinkField.readings }, false)
        const r = new MeterStore()
        await r.load()
        expect(r.frames[0].seq).toBe(head + 2)
        expect(r.queuedCount()).toBe(QUEUE_SLOTS - 1)
    })
    // regression: a flood of acks for frames never queued cost a scan of the queue each
    test("acks outside the queue's (boot, seq) range are refused without a scan", async () => {
        const s = new MeterStore()
        await s.load()
        const first = s.frames[0]
        const last = s.frames[s.frames.length - 1]
        // 600 in one fiber run: a scan of ~30 frames each would pass the VM's 128 K
        // instructions without a yield (panic 60001)
        let accepted = 0
        for (let i = 0; i < 150; ++i) {
            if (s.ack(last.boot, last.seq + 1 + i)) accepted++
            if (s.ack(last.boot + 1, i)) accepted++
            if (s.ack(first.boot, first.seq - 1 - (i % first.seq))) accepted++
            if (s.ack(first.boot - 1, i)) accepted++
        }
        expect(accepted).toBe(0)
        expect(s.queuedCount()).toBe(QUEUE_SLOTS - 1)
        expect(s.ack(last.boot, last.seq)).toBe(true)
    })
})

describe("the queue's state, carried by each slot", () => {
    test("totals are saved with the frame that carries them, and kept by frames without", async () => {
        const s = new MeterStore()
        await s.load()
        const last = s.frames[s.frames.length - 1]
        const totals = { waterMl: 2 ** 40 + 3, waterRaw: 17, reverseRaw: -1, energyWh: 2 ** 53, energyRaw: 2 ** 32 - 1 }
        await s.push(frame(last.seq + 1), { boot: 1, seq: last.seq + 1, body: UplinkField.readings }, false, totals)
        await s.push(frame(last.seq + 2), { boot: 1, seq: last.seq + 2, body: UplinkField.alarm }, false)
        const r = new MeterStore()
        await r.load()
        const t = r.savedTotals()
        expect(t.waterMl).toBe(2 ** 40 + 3)
        expect(t.waterRaw).toBe(17)
        expect(t.reverseRaw).toBe(-1)
        expect(t.energyWh).toBe(2 ** 53)
        expect(t.energyRaw).toBe(2 ** 32 - 1)
        // the slot holds its state in front of the frame, within the budgeted size
        const back = await readRaw(`q${(r.state.tail - 1) % QUEUE_SLOTS}`)
        expect(back.length).toBe(SLOT_STATE_BYTES + frame(last.seq + 2).length)
        expect(back.length <= SLOT_STATE_BYTES + MAX_FRAME_BYTES).toBe(true)
    })
    // meters in the field hold the two-record layout: a state record "st" with these short keys and
    // 27 slots of frames alone; its totals and queue must carry over
    test("a meter of the two-record layout keeps its totals and queue, and its old records go", async () => {
        for (let i = 0; i < 27; ++i) await settings.delete(`q${i}`)
        const old = { h: 5, t: 7, d: 2, w: 123456, rw: 77, rv: 3, e: 4500, re: 12 }
        await settings.set("st", Buffer.from(JSON.stringify(old)))
        await settings.set("q5", frame(50))
        await settings.set("q6", frame(51))
        await settings.set("q26", frame(20))
        const s = new MeterStore()
        await s.load()
        expect(s.state.head).toBe(5)
        expect(s.state.tail).toBe(7)
        expect(s.state.dropped).toBe(2)
        expect(s.frames.length).toBe(2)
        expect(s.frames[1].frame.toString("hex")).toBe(frame(51).toString("hex"))
        const t = s.savedTotals()
        expect(t.waterMl).toBe(123456)
        expect(t.waterRaw).toBe(77)
        expect(t.reverseRaw).toBe(3)
        expect(t.energyWh).toBe(4500)
        expect(t.energyRaw).toBe(12)
        // the first frame after the update: its slot carries the old totals on; then "st" and q26 go
        await s.push(frame(52), { boot: 1, seq: 52, body: UplinkField.alarm }, false)
        expect((await readRaw("st")).length).toBe(0)
        expect((await readRaw("q26")).length).toBe(0)
        const r = new MeterStore()
        await r.load()
        expect(r.state.dropped).toBe(2)
        expect(r.savedTotals().waterMl).toBe(123456)
        expect(r.savedTotals().energyRaw).toBe(12)
        expect(r.frames[r.frames.length - 1].seq).toBe(52)
    })
})

describe("clock", () => {
    test("seconds since start until the first TimeSync, Unix seconds after", () => {
        const c = new Clock()
        const before = c.stamp(90500)
        expect(before.s).toBe(90)
        expect(before.synced).toBe(false)
        // a pushed time (no echoed uptime) is taken as is: Unix 1.8e12 ms now
        c.sync(1_800_000_000_000, 0)
        const after = c.stamp(ds.millis() + 2500)
        expect(after.synced).toBe(true)
        // 2.5 s from now, less what passed since the sync (under a second on a loaded machine)
        expect(after.s >= 1_800_000_001 && after.s <= 1_800_000_002).toBe(true)
    })
    test("an answer to a birth adds half the round trip since the uptime it echoes", () => {
        const c = new Clock()
        const now = ds.millis()
        // the birth left 4 s ago: the bridge's time is 2 s old when it arrives
        c.sync(1_800_000_000_000, (now - 4000) / 1000)
        const t = c.stamp(now)
        expect(t.s >= 1_800_000_001 && t.s <= 1_800_000_002).toBe(true)
    })
})
