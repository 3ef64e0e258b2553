// The flash queue on a full settings store (issue 20): DeviceScript's store refuses a write that
// does not fit (jacdac-c jd_fstor.c returns -3) and its settings service ignores that, so only a
// read-back tells. No frame may count as durable, nor be reloaded after a reboot, unless its own
// bytes are in flash.
import { settings } from "@devicescript/settings"
import { describe, expect, test } from "@devicescript/test"
import { encodeUplink } from "../frames"
import { Uplink as UplinkField } from "../gen/wire"
import { SLOT_STATE_BYTES } from "../queue-slot"
import { readRaw, writeChecked } from "../raw-settings"
import { MeterStore, QUEUE_SLOTS } from "../store"

function frame(seq: number) {
    return encodeUplink({ boot: 7, seq, readings: { intervalS: 60, water: { volumeMl: [seq, seq + 1, seq + 2] } } })
}

/** A frame of about 130 B: its slot, with the queue's state, takes 192 B of the store (jd_fstor.c: 24 + 8 x ceil(n / 8)). */
function bigFrame(seq: number) {
    const v: number[] = []
    for (let i = 0; i < 60; ++i) v.push(200 + seq)
    return encodeUplink({ boot: 7, seq, readings: { intervalS: 60, water: { volumeMl: v } } })
}

function junk(n: number) {
    const b = Buffer.alloc(n)
    for (let i = 0; i < n; ++i) b.setAt(i, "u8", 0x41 + (i % 26))
    return b
}

async function fits(key: string, value: Buffer) {
    return await writeChecked(key, value)
}

/**
 * Leaves exactly `free` bytes for records in the store (a multiple of 8, under 136). A value of n
 * bytes takes 24 + 8 x ceil(n / 8) (jd_fstor.c); a rewrite needs its new record free while the old
 * copy counts, and a collection frees the old copy. Returns the keys it wrote.
 */
async function leaveFree(free: number): Promise<string[]> {
    const keys = ["probe"]
    const probeBytes = 24 + 136
    expect(await fits("probe", junk(136))).toBe(true)
    // fill with 224 B records until one is refused: less than 224 B are left
    for (let i = 0; i < 60; ++i) {
        const key = `junk${i}`
        if (!(await fits(key, junk(200)))) break
        keys.push(key)
    }
    // shrink the probe to the largest record that still fits: exactly probeBytes are left after it
    // (needs at least 32 B left by the fill: the probe's size sets that remainder)
    let shrunk = false
    for (let n = 128; n >= 1 && !shrunk; n -= 8) shrunk = await fits("probe", junk(n))
    if (!shrunk) console.log("the fill left under 32 B: change the probe's size")
    expect(shrunk).toBe(true)
    // and take probeBytes - free of them
    expect(await fits("filler", junk(probeBytes - free - 24))).toBe(true)
    keys.push("filler")
    return keys
}

describe("a full settings store", () => {
    test("a refused slot keeps its frame in RAM, never durable, never reloaded stale", async () => {
        const s = new MeterStore()
        await s.load()
        // one lap of the ring, acknowledged: every slot holds an old frame
        for (let seq = 1; seq <= QUEUE_SLOTS; ++seq) {
            await s.push(frame(seq), { boot: 7, seq, body: UplinkField.readings }, false)
            s.ack(7, seq)
        }
        expect(s.unstored).toBe(0)
        // 120 B free: not enough for a big frame's slot (192 B with its state)
        const filled = await leaveFree(120)
        console.log(`left 120 B free with ${filled.length} values`)

        // the next lap: the store has no room for these slots
        const first = QUEUE_SLOTS + 1
        const last = QUEUE_SLOTS + 6
        for (let seq = first; seq <= last; ++seq)
            await s.push(bigFrame(seq), { boot: 7, seq, body: UplinkField.readings }, false)
        // every frame is still queued in RAM, to be sent
        expect(s.queuedCount()).toBe(last - first + 1)
        let durable = 0
        for (const f of s.frames) {
            const back = await readRaw(`q${f.pos % QUEUE_SLOTS}`)
            const stored = !!back && back.slice(SLOT_STATE_BYTES).toString("hex") === f.frame.toString("hex")
            // durable means its bytes are back from flash
            if (f.durable) expect(stored).toBe(true)
            if (f.durable) durable++
        }
        console.log(`${durable} of ${s.frames.length} frames durable, ${s.unstored} refused`)
        // the condition is counted (the next birth carries it)
        expect(s.unstored > 0).toBe(true)
        expect(durable + s.unstored).toBe(last - first + 1)

        // a reboot reloads only frames whose own bytes are in flash, never an old lap's frame in a
        // refused slot's place; the last acknowledged frame may come back (acks cost no write)
        const r = new MeterStore()
        await r.load()
        for (const f of r.frames)
            expect(f.frame.toString("hex")).toBe((f.seq >= first ? bigFrame(f.seq) : frame(f.seq)).toString("hex"))
        expect(r.frames.filter((f) => f.seq >= first).length).toBe(durable)
        expect(r.frames.filter((f) => f.seq < first).length <= 1).toBe(true)

        // room again: the next frame is durable, and the queue goes on
        for (const k of filled) await settings.delete(k)
        await s.push(bigFrame(last + 1), { boot: 7, seq: last + 1, body: UplinkField.readings }, false)
        expect(s.frames[s.frames.length - 1].durable).toBe(true)
    })
})
