// The update window's parts that run without the runtime's link, in the VM: which UpdateWindow
// downlinks a meter refuses (the connection string's size and form, the window's bounds, what its
// flash queue can hold), the downlink's decoding and sealing (the golden frames down-update and
// sealed/down-update), and the MQTT link's hold: a DISCONNECT, then no socket until resume().
import * as ds from "@devicescript/core"
import { describe, expect, test } from "@devicescript/test"
import { decodeDownlink, openDownlink } from "../frames"
import { MqttLink, MqttSocket } from "../mqtt"
import { goldenDownlinks, sealedGolden } from "../gen/golden"
import { KIND_CONFIG, KIND_UPDATE, downKindCode, parseKey } from "../seal"
import { MAX_CONN_BYTES, MAX_WINDOW_S, MIN_WINDOW_S, windowRefusal } from "../update-window"

const KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
const CONN = "ws://wssk:" + KEY + "@10.0.0.5:8081/wssk/m1"

function repeat(s: string, n: number): string {
    let out = ""
    for (let i = 0; i < n; ++i) out = out + s
    return out
}

describe("windowRefusal", () => {
    test("a window the queue holds is opened", () => {
        expect(windowRefusal(CONN, 120, 60, 26)).toBe("")
        expect(windowRefusal(CONN, MIN_WINDOW_S, 2, 26)).toBe("")
        expect(windowRefusal(CONN, MAX_WINDOW_S, 3600, 26)).toBe("")
    })
    test("the window's bounds", () => {
        expect(windowRefusal(CONN, MIN_WINDOW_S - 1, 60, 26).indexOf("outside") >= 0).toBe(true)
        expect(windowRefusal(CONN, MAX_WINDOW_S + 1, 3600, 26).indexOf("outside") >= 0).toBe(true)
        expect(windowRefusal(CONN, 0, 60, 26).length > 0).toBe(true)
    })
    test("the frames made during the window must fit the free slots, one to spare", () => {
        // 40 s at a frame every 2 s: 21 frames (20 and the one being filled)
        expect(windowRefusal(CONN, 40, 2, 22)).toBe("")
        expect(windowRefusal(CONN, 40, 2, 21).indexOf("21 frames, 21 slots free") >= 0).toBe(true)
        expect(windowRefusal(CONN, 120, 60, 2).length > 0).toBe(true)
    })
    test("the connection string: ws:// with a key, at most MAX_CONN_BYTES", () => {
        const longest = CONN + repeat("x", MAX_CONN_BYTES - CONN.length)
        expect(longest.length).toBe(MAX_CONN_BYTES)
        expect(windowRefusal(longest, 120, 60, 26)).toBe("")
        expect(windowRefusal(longest + "x", 120, 60, 26).indexOf("over 120 B") >= 0).toBe(true)
        expect(windowRefusal("wss://" + KEY + "@h/p", 120, 60, 26).indexOf("not a ws://") >= 0).toBe(true)
        expect(windowRefusal("ws://h/p", 120, 60, 26).indexOf("not a ws://") >= 0).toBe(true)
        expect(windowRefusal("", 120, 60, 26).length > 0).toBe(true)
    })
})

describe("the UpdateWindow downlink", () => {
    test("the topic kind update has its own nonce byte", () => {
        expect(downKindCode("update")).toBe(KIND_UPDATE)
        expect(KIND_UPDATE).toBe(0x85)
        expect(downKindCode("config")).toBe(KIND_CONFIG)
    })
    test("the golden frame decodes to its connection string and window", () => {
        let n = 0
        goldenDownlinks.forEach((g) => {
            if (g.name !== "down-update") return
            const d: any = decodeDownlink(Buffer.from(g.hex, "hex"))
            expect(d.update !== undefined).toBe(true)
            expect(d.update.conn).toBe((g.json as any).update.conn)
            expect(d.update.windowS).toBe(120)
            n++
        })
        expect(n).toBe(1)
    })
    test("sealed, it opens only as an update (not as a config) and only under its key", () => {
        let n = 0
        sealedGolden.forEach((s) => {
            if (s.of !== "down-update") return
            const key: any = parseKey(s.key)
            const d = decodeDownlink(Buffer.from(s.hex, "hex"))
            const opened: any = openDownlink(d, KIND_UPDATE, key)
            expect(opened !== undefined && opened.update !== undefined).toBe(true)
            expect(opened.update.windowS).toBe(120)
            expect(openDownlink(d, KIND_CONFIG, key) === undefined).toBe(true)
            n++
        })
        expect(n).toBe(1)
    })
})

/** A socket that answers CONNACK and keeps what was written; closed by the link or the test. */
class Sock implements MqttSocket {
    rx: Buffer[] = [Buffer.from("20020000", "hex")]
    sent: string[] = []
    closed = false
    async send(b: Buffer) {
        if (this.closed) throw new Error("closed")
        this.sent.push(b.toString("hex"))
    }
    async recv(timeoutMs: number): Promise<Buffer | null | undefined> {
        if (this.rx.length) return this.rx.shift()
        if (this.closed) return null
        await ds.sleep(Math.min(timeoutMs, 5))
        return undefined
    }
    async close() {
        this.closed = true
    }
}

async function until(what: string, cond: () => boolean, ms: number) {
    const t0 = ds.millis()
    while (!cond()) {
        if (ds.millis() - t0 > ms) throw new Error(`timed out waiting for ${what}`)
        await ds.sleep(5)
    }
}

describe("MqttLink.hold", () => {
    test("ends the session with a DISCONNECT, opens no socket until resume(), then connects at once", async () => {
        const socks: Sock[] = []
        const l = new MqttLink({
            host: "x",
            port: 1,
            proto: "tcp",
            clientId: "m-1",
            keepAliveS: 60,
            timing: { backoffMinMs: 5, backoffBaseMs: 5 },
            open: async () => {
                const s = new Sock()
                socks.push(s)
                return s
            },
        })
        setTimeout(async () => {
            await l.run()
        }, 0)
        await until("connected", () => l.connected, 2000)
        expect(l.idle()).toBe(false)
        l.hold()
        await until("idle", () => l.idle(), 3000)
        expect(l.connected).toBe(false)
        expect(socks.length).toBe(1)
        expect(socks[0].closed).toBe(true)
        // the last packet before the close is a DISCONNECT
        expect(socks[0].sent[socks[0].sent.length - 1]).toBe("e000")
        await ds.sleep(1000) // the backoff here is 5-10 ms: a reconnect would have come by now
        expect(socks.length).toBe(1)
        expect(l.idle()).toBe(true)
        l.resume()
        await until("connected again", () => l.connected, 2000)
        expect(socks.length).toBe(2)
        l.hold()
        await until("idle again", () => l.idle(), 3000)
    })
})
