// The meter's MQTT client in the VM: the packet codec against bytes made by
// mqtt-packet 9 (the packet library of MQTT.js), the framer over any split of the stream, and the
// connection class on a fake socket: refused subscriptions, a 5,000-packet flood, a full send
// queue, an oversize packet, reconnect backoff.
import * as ds from "@devicescript/core"
import { describe, expect, test } from "@devicescript/test"
import { MqttLink, MqttSocket, backoffMs } from "../mqtt"
import { Framer, Packet, parseConnack, parsePublish, parseSuback, publishId, readFixedHeader } from "../mqtt-decode"
import {
    encodeConnect,
    encodeDisconnect,
    encodePingreq,
    encodePuback,
    encodePubacks,
    encodePublish,
    encodeSubscribe,
    packet,
} from "../mqtt-encode"
import { PacketType, SUBACK_FAILURE } from "../mqtt-protocol"

function hex(b: Buffer) {
    return b.toString("hex")
}

function filled(n: number, v: number) {
    const b = Buffer.alloc(n)
    b.fillAt(0, n, v)
    return b
}

/** The body of a packet that was not skipped. */
function bodyOf(p: Packet): Buffer {
    if (!p.body) throw new Error(`packet of type ${p.type} skipped`)
    return p.body
}

/** Throws with both values when v is outside [lo, hi]. */
function within(what: string, v: number, lo: number, hi: number) {
    if (!(v >= lo && v <= hi)) throw new Error(`${what}: ${v} not in [${lo}, ${hi}]`)
}

describe("packets match mqtt-packet's bytes", () => {
    test("CONNECT with will, user name and password", () => {
        const b = encodeConnect({
            clientId: "m-1",
            keepAliveS: 30,
            will: { topic: "citymeter/v1/m-1/up/death", payload: Buffer.from("0801", "hex"), qos: 1 },
            username: "m-1",
            password: "pw",
        })
        expect(hex(b)).toBe(
            "103700044d51545404ce001e00036d2d310019636974796d657465722f76312f6d2d312f75702f64656174680002080100036d2d3100027077",
        )
    })
    test("CONNECT, clean session only", () => {
        expect(hex(encodeConnect({ clientId: "m-1", keepAliveS: 30 }))).toBe("100f00044d5154540402001e00036d2d31")
    })
    test("PUBLISH at QoS 1 and 0", () => {
        expect(hex(encodePublish("a/b", Buffer.from("0102", "hex"), 1, 258))).toBe("32090003612f6201020102")
        expect(hex(encodePublish("a/b", Buffer.from("0102", "hex"), 0, 0))).toBe("30070003612f620102")
    })
    test("a two-byte remaining length", () => {
        const b = encodePublish("t", Buffer.alloc(200), 0, 0)
        expect(hex(b.slice(0, 5))).toBe("30cb010001")
        expect(b.length).toBe(3 + 203)
    })
    test("SUBSCRIBE, PUBACK, PINGREQ, DISCONNECT", () => {
        expect(hex(encodeSubscribe(7, ["citymeter/v1/m-1/down/#"], 1))).toBe(
            "821c00070017636974796d657465722f76312f6d2d312f646f776e2f2301",
        )
        expect(hex(encodePuback(65535))).toBe("4002ffff")
        expect(hex(encodePubacks([1, 258]))).toBe("4002000140020102")
        expect(hex(encodePingreq())).toBe("c000")
        expect(hex(encodeDisconnect())).toBe("e000")
    })
})

describe("parsers", () => {
    test("CONNACK: return code and session present", () => {
        const refused = parseConnack(Buffer.from("0005", "hex"))
        expect(refused.returnCode).toBe(5)
        expect(refused.sessionPresent).toBe(false)
        expect(parseConnack(Buffer.from("0100", "hex")).sessionPresent).toBe(true)
    })
    test("SUBACK: a refusal is 0x80 [MQTT-3.9.3]", () => {
        const s = parseSuback(Buffer.from("000780", "hex"))
        expect(s.id).toBe(7)
        expect(s.codes.length).toBe(1)
        expect(s.codes[0]).toBe(SUBACK_FAILURE)
        expect(parseSuback(Buffer.from("000701", "hex")).codes[0]).toBe(1)
    })
    test("PUBLISH: topic, packet identifier, payload", () => {
        const p = parsePublish(2, Buffer.from("0003612f6201020102", "hex"))
        expect(p.topic).toBe("a/b")
        expect(p.qos).toBe(1)
        expect(p.id).toBe(258)
        expect(hex(p.payload)).toBe("0102")
        const q = parsePublish(0, Buffer.from("0003612f620102", "hex"))
        expect(q.id).toBe(0)
        expect(hex(q.payload)).toBe("0102")
    })
    test("PUBLISH: QoS 3 and a topic past the end are malformed", () => {
        expect(() => parsePublish(6, Buffer.from("0003612f620001", "hex"))).toThrow()
        expect(() => parsePublish(2, Buffer.from("0009612f62", "hex"))).toThrow()
    })
    test("the packet identifier of a PUBLISH from its first bytes", () => {
        expect(publishId(2, Buffer.from("0003612f620102", "hex"))).toBe(258)
        expect(publishId(2, Buffer.from("0003612f", "hex"))).toBe(-1)
        expect(publishId(0, Buffer.from("0003612f", "hex"))).toBe(0)
    })
    test("fixed header: incomplete, four length bytes, five is malformed [MQTT-2.2.3]", () => {
        expect(readFixedHeader(Buffer.from("30", "hex"), 0)).toBe(null)
        expect(readFixedHeader(Buffer.from("30ff", "hex"), 0)).toBe(null)
        const h = readFixedHeader(Buffer.from("0030ffffff7f", "hex"), 1)
        if (!h) throw new Error("no fixed header")
        expect(h.type).toBe(PacketType.PUBLISH)
        expect(h.length).toBe(268435455)
        expect(h.size).toBe(5)
        expect(() => readFixedHeader(Buffer.from("30ffffffff01", "hex"), 0)).toThrow()
    })
})

describe("framer", () => {
    // CONNACK, SUBACK, a QoS 1 PUBLISH with a 200-byte payload (two-byte length), PINGRESP
    const stream = Buffer.concat(
        Buffer.from("20020000", "hex"),
        Buffer.from("9003000701", "hex"),
        encodePublish("a/b", filled(200, 5), 1, 9),
        Buffer.from("d000", "hex"),
    )
    test("the same packets whatever the split", async () => {
        for (let cut = 1; cut < stream.length; cut += 7) {
            await ds.sleep(0) // a VM fiber may run 128 K instructions between yields
            const f = new Framer(1024)
            const types: number[] = []
            for (let at = 0; at < stream.length; at += cut) {
                f.push(stream.slice(at, Math.min(stream.length, at + cut)))
                while (true) {
                    const p = f.next()
                    if (!p) break
                    types.push(p.type)
                    if (p.type === PacketType.PUBLISH) {
                        expect(parsePublish(p.flags, bodyOf(p)).id).toBe(9)
                        expect(bodyOf(p).length).toBe(207)
                    }
                }
                within("bytes held", f.held(), 0, 1024 + 5)
            }
            expect(types.join(",")).toBe("2,9,3,13")
            expect(f.held()).toBe(0)
        }
    })
    test("a packet over the limit is skipped as it arrives; the next one is intact", () => {
        const big = encodePublish("a/b", filled(3000, 1), 1, 77)
        const after = encodePublish("a/b", Buffer.from("01", "hex"), 1, 78)
        const f = new Framer(1024)
        const seen: number[] = []
        let skippedId = 0
        const all = Buffer.concat(big, after)
        for (let at = 0; at < all.length; at += 500) {
            f.push(all.slice(at, Math.min(all.length, at + 500)))
            within("bytes held", f.held(), 0, 1024 + 5)
            while (true) {
                const p = f.next()
                if (!p) break
                if (p.body) seen.push(parsePublish(p.flags, p.body).id)
                else {
                    expect(p.length).toBe(big.length - 3)
                    skippedId = publishId(p.flags, p.head)
                }
            }
        }
        expect(skippedId).toBe(77)
        expect(seen.join(",")).toBe("78")
    })
})

describe("backoff", () => {
    test("full jitter under a cap that doubles up to the maximum", () => {
        expect(backoffMs(0, 0, 250, 2000, 30000)).toBe(250)
        expect(backoffMs(0, 0.999, 250, 2000, 30000)).toBe(250 + 1998)
        expect(backoffMs(1, 0.999, 250, 2000, 30000)).toBe(250 + 3996)
        expect(backoffMs(3, 0.5, 250, 2000, 30000)).toBe(250 + 8000)
        expect(backoffMs(10, 0.999, 250, 2000, 30000)).toBe(250 + 29970)
        expect(backoffMs(1000, 0.5, 250, 2000, 30000)).toBe(250 + 15000)
    })
})

/** A socket the test feeds; writes are kept; `refuse` writes fail as with a full send queue. */
class FakeSocket implements MqttSocket {
    rx: Buffer[] = []
    sent: Buffer[] = []
    refuse = 0
    closed = false
    /** Called when rx is empty, for data made on demand (a flood). */
    more: (() => Buffer | null) | null = null
    /** Takes the writes instead of `sent` (which would fill the 64 KB heap in a flood). */
    onSend: ((b: Buffer) => void) | null = null
    writes = 0
    async send(b: Buffer) {
        if (this.closed) throw new Error("socket fake: closed")
        if (this.refuse > 0) {
            this.refuse--
            throw new Error("socket fake: send error -1")
        }
        this.writes++
        if (this.onSend) this.onSend(b)
        else this.sent.push(b)
    }
    async recv(timeoutMs: number): Promise<Buffer | null | undefined> {
        if (!this.rx.length && this.more) {
            const b = this.more()
            if (b) return b
        }
        if (this.rx.length) return this.rx.shift()
        if (this.closed) return null
        await ds.sleep(Math.min(timeoutMs, 5))
        return undefined
    }
    async close() {
        this.closed = true
    }
    /** Packets written, of a type. */
    written(type: number): Buffer[] {
        const out: Buffer[] = []
        for (const w of this.sent) {
            const f = new Framer(100000)
            f.push(w)
            while (true) {
                const p = f.next()
                if (!p) break
                if (p.type === type) out.push(bodyOf(p))
            }
        }
        return out
    }
}

async function until(what: string, cond: () => boolean, ms: number) {
    const t0 = ds.millis()
    while (!cond()) {
        if (ds.millis() - t0 > ms) throw new Error(`timed out waiting for ${what}`)
        await ds.sleep(5)
    }
}

function link(sock: FakeSocket, timing: any) {
    const l = new MqttLink({
        host: "x",
        port: 1,
        proto: "tcp",
        clientId: "m-1",
        keepAliveS: 60,
        timing,
        open: async () => sock,
    })
    l.subscribe("citymeter/v1/m-1/down/#")
    return l
}

/** Starts the link's reconnect loop in the background. */
function start(l: MqttLink) {
    setTimeout(async () => {
        await l.run()
    }, 0)
}

const CONNACK = "20020000"
function suback(id: number, code: number) {
    return packet(PacketType.SUBACK, 0, Buffer.from([id >> 8, id & 255, code]))
}
function subId(body: Buffer) {
    return body.getAt(0, "u8") * 256 + body.getAt(1, "u8")
}

describe("connection", () => {
    test("a refused subscription (SUBACK 0x80) is retried until granted", async () => {
        const s = new FakeSocket()
        const l = link(s, { subscribeRetryMs: 50 })
        s.rx.push(Buffer.from(CONNACK, "hex"))
        start(l)
        await until("SUBSCRIBE", () => s.written(PacketType.SUBSCRIBE).length === 1, 1000)
        expect(l.connected).toBe(true)
        s.rx.push(suback(subId(s.written(PacketType.SUBSCRIBE)[0]), SUBACK_FAILURE))
        await until("SUBSCRIBE again", () => s.written(PacketType.SUBSCRIBE).length === 2, 1000)
        expect(l.subscribed).toBe(false)
        const second = s.written(PacketType.SUBSCRIBE)[1]
        expect(hex(second.slice(2))).toBe(hex(s.written(PacketType.SUBSCRIBE)[0].slice(2)))
        // on a busy machine a third SUBSCRIBE may leave before this SUBACK is read: it answers that one too
        s.rx.push(suback(subId(second), 1))
        await until("granted", () => l.subscribed, 1000)
        const sent = s.written(PacketType.SUBSCRIBE).length
        await ds.sleep(300) // retries would come every 100-200 ms by now
        expect(s.written(PacketType.SUBSCRIBE).length).toBe(sent)
        await s.close()
    })

    test("a SUBACK that arrives after the SUBSCRIBE was sent again still grants the subscription [MQTT-3.8.4-1]", async () => {
        const s = new FakeSocket()
        const l = link(s, { subscribeRetryMs: 50 })
        s.rx.push(Buffer.from(CONNACK, "hex"))
        start(l)
        await until("SUBSCRIBE sent again", () => s.written(PacketType.SUBSCRIBE).length >= 2, 1000)
        const first = s.written(PacketType.SUBSCRIBE)[0]
        s.rx.push(suback(subId(first), 1))
        await until("granted", () => l.subscribed, 1000)
        const sent = s.written(PacketType.SUBSCRIBE).length
        await ds.sleep(300)
        expect(s.written(PacketType.SUBSCRIBE).length).toBe(sent)
        await s.close()
    })

    test("5,000 QoS 1 publishes queued in 1 KB chunks: all delivered and acknowledged in batches; timers keep running", async () => {
        // without yields, a few hundred queued packets exceed a fiber's 128 K instructions (panic 60001)
        const N = 5000
        const s = new FakeSocket()
        const l = link(s, {})
        s.rx.push(Buffer.from(CONNACK, "hex"))
        const payload = Buffer.from("0a0408011064", "hex") // an Ack downlink
        const topic = "citymeter/v1/m-1/down/ack"
        // the stream is N copies of one PUBLISH, numbered 1..N; packets straddle the 1 KB chunks
        const tpl = encodePublish(topic, payload, 1, 0)
        const L = tpl.length
        const idAt = 4 + topic.length
        let pos = 0
        // every chunk is ready at once, as when the runtime has queued a backlog
        s.more = () => {
            if (pos >= N * L) return null
            const n = Math.min(1024, N * L - pos)
            const chunk = Buffer.alloc(n)
            for (let k = Math.floor(pos / L); k * L < pos + n; ++k) {
                const from = Math.max(0, pos - k * L)
                const to = Math.min(L, pos + n - k * L)
                chunk.blitAt(k * L + from - pos, tpl, from, to - from)
                if (idAt >= from && idAt < to) chunk.setAt(k * L + idAt - pos, "u8", ((k + 1) >> 8) & 255)
                if (idAt + 1 >= from && idAt + 1 < to) chunk.setAt(k * L + idAt + 1 - pos, "u8", (k + 1) & 255)
            }
            pos = pos + n
            return chunk
        }
        let received = 0
        l.onMessage = (t, p) => {
            if (t === topic && p.length === payload.length) received++
        }
        // PUBACKs, checked as they are written: every identifier once, in order
        let acked = 0
        let outOfOrder = 0
        s.onSend = (b) => {
            if (b.getAt(0, "u8") !== PacketType.PUBACK * 16) return
            for (let at = 0; at + 4 <= b.length; at += 4) {
                acked++
                if (subId(b.slice(at + 2, at + 4)) !== acked) outOfOrder++
            }
        }
        // a timer like the sampler's: it must not wait for the flood
        let ticks = 0
        let lastTick = ds.millis()
        let maxGap = 0
        const timer = setInterval(() => {
            const now = ds.millis()
            if (now - lastTick > maxGap) maxGap = now - lastTick
            lastTick = now
            ticks++
        }, 20)
        const t0 = ds.millis()
        start(l)
        await until("flood handled", () => received === N, 120000)
        clearInterval(timer)
        const ms = ds.millis() - t0
        await until("PUBACKs written", () => acked === N, 5000)
        console.log(
            `flood: ${N} publishes in ${ms} ms, ${s.writes} writes, ${ticks} timer ticks, longest gap ${maxGap} ms`,
        )
        expect(outOfOrder).toBe(0)
        within("writes", s.writes, 2, N / 8)
        // a parser that never yields stalls timers for the whole flood; on a loaded machine the flood and
        // every gap stretch alike, so the bound is 250 ms or a tenth of the flood, whichever is longer
        within("longest timer gap", maxGap, 0, Math.max(250, ms / 10))
        expect(l.connected).toBe(true)
        await s.close()
    })

    test("a full send queue: publish retries a bounded number of times; PUBACKs wait for the next write", async () => {
        const s = new FakeSocket()
        const l = link(s, { sendTries: 4 })
        s.rx.push(Buffer.from(CONNACK, "hex"))
        start(l)
        await until("connected", () => l.connected, 1000)
        s.refuse = 3
        expect(await l.publish("a/b", Buffer.from("01", "hex"), 1)).toBe(true)
        expect(l.sendRetries).toBe(3)
        s.refuse = 100
        expect(await l.publish("a/b", Buffer.from("02", "hex"), 1)).toBe(false)
        expect(l.sendFailures).toBe(1)
        // the queue is still full when three publishes arrive: their PUBACKs go once it empties
        s.refuse = 2
        for (let id = 40; id < 43; ++id) s.rx.push(encodePublish("a/b", Buffer.from("00", "hex"), 1, id))
        await until("PUBACKs", () => s.written(PacketType.PUBACK).length === 3, 2000)
        expect(s.refuse).toBe(0)
        expect(l.connected).toBe(true)
        await s.close()
    })

    test("an oversize publish is skipped, acknowledged, and the stream goes on", async () => {
        const s = new FakeSocket()
        const l = link(s, { maxPacket: 256 })
        s.rx.push(Buffer.from(CONNACK, "hex"))
        const got: string[] = []
        l.onMessage = (_t, p) => got.push(hex(p))
        const big = encodePublish("a/b", filled(2000, 3), 1, 500)
        for (let at = 0; at < big.length; at += 300) s.rx.push(big.slice(at, Math.min(big.length, at + 300)))
        s.rx.push(encodePublish("a/b", Buffer.from("0102", "hex"), 1, 501))
        start(l)
        await until("the next publish", () => got.length === 1, 2000)
        expect(got[0]).toBe("0102")
        expect(l.skipped).toBe(1)
        await until("PUBACKs", () => s.written(PacketType.PUBACK).length === 2, 1000)
        expect(subId(s.written(PacketType.PUBACK)[0])).toBe(500)
        await s.close()
    })

    test("reconnect delays double while attempts fail and start over after a good session", async () => {
        const opens: number[] = []
        /** The fifth socket, the one the broker accepts. */
        const good = new FakeSocket()
        const timing = { backoffMinMs: 10, backoffBaseMs: 40, backoffMaxMs: 400, goodSessionMs: 100 }
        const l = new MqttLink({
            host: "x",
            port: 1,
            proto: "tcp",
            clientId: "m-1",
            keepAliveS: 60,
            timing,
            random: () => 0.999, // the longest delay each time
            open: async () => {
                opens.push(ds.millis())
                if (opens.length === 5) {
                    good.rx.push(Buffer.from(CONNACK, "hex"))
                    return good
                }
                if (opens.length > 6) await ds.sleep(100000) // park the loop
                throw new Error("connection refused")
            },
        })
        start(l)
        await until("five attempts", () => opens.length === 5, 10000)
        // after the k-th failure in a row: min + base * 2^k (80, 160, 320, then the 400 cap)
        for (let k = 1; k < 5; ++k) {
            const want = 10 + Math.floor(0.999 * Math.min(400, 40 * Math.pow(2, k)))
            within(`delay after failure ${k}`, opens[k] - opens[k - 1], want, want + 40)
        }
        await until("accepted", () => l.connected, 1000)
        await ds.sleep(150) // a good session
        await good.close()
        const closedAt = ds.millis()
        await until("reconnect", () => opens.length === 6, 2000)
        within("delay after a good session", opens[5] - closedAt, 10 + 39, 10 + 39 + 40)
    })
})
