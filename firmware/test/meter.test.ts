// Firmware unit tests for counters, interval statistics and the flash queue, in the VM.
import { describe, expect, test } from "@devicescript/test"
import { encodeUplink } from "../frames"
import { Stats, Totalizer, counterDelta } from "../sampler"
import { MeterStore, QUEUE_SLOTS } from "../store"

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
        for (let seq = 1; seq <= n; ++seq) await s.push(frame(seq))
        expect(s.state.d).toBe(3)
        expect(s.frames.length).toBe(QUEUE_SLOTS)
        expect(s.frames[0].seq).toBe(4)

        const r = new MeterStore()
        await r.load()
        expect(r.frames.length).toBe(QUEUE_SLOTS)
        expect(r.frames[0].seq).toBe(4)
        expect(r.frames[QUEUE_SLOTS - 1].seq).toBe(n)
        expect(r.frames[0].frame.toString("hex")).toBe(frame(4).toString("hex"))
        expect(r.state.d).toBe(3)
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
        await s.saveState()
        const r = new MeterStore()
        await r.load()
        expect(r.frames[0].seq).toBe(head + 2)
    })
    // issue 9: a flood of acks for frames never queued cost a scan of the queue each
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
        expect(s.queuedCount()).toBe(QUEUE_SLOTS - 2)
        expect(s.ack(last.boot, last.seq)).toBe(true)
    })
})
