// Sealed frames in the VM: the firmware's AES-256-CCM sealing gives the committed sealed
// golden bytes (made by Node's crypto, scripts/golden.ts), and it opens the bridge's sealed
// downlinks; another key, a flipped bit or an unsealed downlink is refused.
import { describe, expect, test } from "@devicescript/test"
import { decodeDownlink, encodeSealedUplink, openDownlink } from "../frames"
import { AlarmType } from "../gen/wire"
import { goldenDownlinks, goldenUplinks, sealedGolden } from "../gen/golden"
import { downKindCode, keyId, parseKey } from "../seal"

function plainOf(name: string): any {
    for (const g of goldenUplinks) if (g.name === name) return g
    for (const g of goldenDownlinks) if (g.name === name) return g
    return undefined
}

/** A test key (64 hex digits); a test fails at once on one that is not. */
function keyOf(hex: string): Buffer {
    const key = parseKey(hex)
    if (!key) throw new Error(`not a key: ${hex}`)
    return key
}

describe("sealed uplinks match the golden bytes", () => {
    sealedGolden.forEach((s) => {
        if (s.message !== "Uplink") return
        test(s.name, () => {
            const json = plainOf(s.of).json
            if (json.alarm && typeof json.alarm.type === "string") json.alarm.type = (AlarmType as any)[json.alarm.type]
            if (s.link) json.link = s.link
            expect(encodeSealedUplink(json, keyOf(s.key)).toString("hex")).toBe(s.hex)
        })
    })
})

describe("sealed downlinks open to the plain golden frame", () => {
    sealedGolden.forEach((s) => {
        if (s.message !== "Downlink") return
        test(s.name, () => {
            const want: any = plainOf(s.of).json
            const kind = Object.keys(want)[0]
            const d = decodeDownlink(Buffer.from(s.hex, "hex"))
            const opened: any = openDownlink(d, downKindCode(kind), keyOf(s.key))
            expect(opened !== undefined).toBe(true)
            for (const field of Object.keys(want[kind])) expect(opened[kind][field]).toBe(want[kind][field])
            // another key, another kind, a flipped bit: refused
            const other = Buffer.alloc(32)
            expect(openDownlink(d, downKindCode(kind), other) === undefined).toBe(true)
            expect(openDownlink(d, downKindCode(kind === "ack" ? "resend" : "ack"), keyOf(s.key)) === undefined).toBe(
                true,
            )
            const flipped = Buffer.from(s.hex, "hex")
            const at = flipped.length - 3
            flipped.setAt(at, "u8", flipped.getAt(at, "u8") ^ 4)
            expect(openDownlink(decodeDownlink(flipped), downKindCode(kind), keyOf(s.key)) === undefined).toBe(true)
            // the plain (unsealed) frame is not a sealed downlink
            const plain = decodeDownlink(Buffer.from(plainOf(s.of).hex, "hex"))
            expect(openDownlink(plain, downKindCode(kind), keyOf(s.key)) === undefined).toBe(true)
        })
    })
})

describe("keys", () => {
    test("key id is the first 4 bytes of SHA-256, as the bridge computes it", () => {
        const key = keyOf("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
        expect(keyId(key)).toBe(1661848873) // Node: sha256(00..1f)[0..4] big-endian
    })
    test("a setting that is not 64 hex digits is no key", () => {
        expect(parseKey("abcd") === undefined).toBe(true)
        expect(parseKey("") === undefined).toBe(true)
    })
})
