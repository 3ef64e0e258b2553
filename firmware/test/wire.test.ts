// Firmware unit tests, run in the DeviceScript VM: `npm run test:firmware`.
// The encoder's bytes must equal the committed golden hex (proto/golden), byte for byte.
import { describe, expect, test } from "@devicescript/test"
import { decodeDownlink, encodeUplink } from "../frames"
import { AlarmType } from "../gen/wire"
import { goldenDownlinks, goldenUplinks } from "../gen/golden"
import { PbReader, PbWriter, unzigzag, zigzag } from "../pb"

describe("uplink encoder matches golden frames", () => {
    goldenUplinks.forEach((g) => {
        test(g.name, () => {
            const json = g.json
            // protobuf JSON names enums; the firmware uses their numbers
            if (json.alarm && typeof json.alarm.type === "string") json.alarm.type = (AlarmType as any)[json.alarm.type]
            expect(encodeUplink(json).toString("hex")).toBe(g.hex)
        })
    })
})

describe("downlink decoder matches golden frames", () => {
    goldenDownlinks.forEach((g) => {
        test(g.name, () => {
            const d: any = decodeDownlink(Buffer.from(g.hex, "hex"))
            const want: any = g.json
            for (const kind of Object.keys(want)) {
                for (const field of Object.keys(want[kind])) expect(d[kind][field]).toBe(want[kind][field])
            }
        })
    })
})

describe("varints", () => {
    test("round trip up to 2^53", () => {
        const values = [0, 1, 127, 128, 300, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 52 - 1, 2 ** 52]
        const w = new PbWriter(4)
        for (const v of values) w.varint(v)
        const r = new PbReader(w.finish())
        for (const v of values) expect(r.varint()).toBe(v)
        expect(r.eof()).toBe(true)
    })
    test("zigzag", () => {
        for (const v of [0, -1, 1, -2, 2 ** 31 - 1, -(2 ** 31), 2 ** 40, -(2 ** 40)])
            expect(unzigzag(zigzag(v))).toBe(v)
        expect(zigzag(-1)).toBe(1)
        expect(zigzag(1)).toBe(2)
    })
    test("truncated input throws", () => {
        let threw = false
        try {
            decodeDownlink(Buffer.from("0a05", "hex"))
        } catch {
            threw = true
        }
        expect(threw).toBe(true)
    })
})
