// A small MQTT 3.1.1 client for the meter, on @devicescript/net sockets.
//
// Why not @devicescript/net's MQTTClient: it reads one socket chunk per `onmessage` event, and
// events that arrive while a handler runs are coalesced, so incoming packets pile up and are read
// one per later event (seen here: acks arriving 8+ s late, one per publish); QoS 1 publishes all
// use packet id 1 and PUBACK is only logged; the will must be a string. This client has one reader
// loop that drains every chunk, parses every complete packet, numbers its packets, takes a binary
// will, and reconnects with backoff. End-to-end delivery is still our own Ack (proto: Ack).
import * as ds from "@devicescript/core"
import { Socket, connect } from "@devicescript/net"

// Control packet types [MQTT-2.2.1]
const CONNECT = 1
const CONNACK = 2
const PUBLISH = 3
const PUBACK = 4
const SUBSCRIBE = 8
const PINGREQ = 12
const DISCONNECT = 14

export interface MqttWill {
    topic: string
    payload: Buffer
    qos: number
}

export interface MqttOptions {
    host: string
    port: number
    proto: string
    clientId: string
    username?: string
    password?: string
    keepAliveS: number
    will?: MqttWill
}

class Bytes {
    parts: Buffer[] = []
    u8(v: number) {
        const b = Buffer.alloc(1)
        b.setAt(0, "u8", v)
        this.parts.push(b)
    }
    u16(v: number) {
        this.u8(Math.floor(v / 256) & 0xff)
        this.u8(v & 0xff)
    }
    /** Length-prefixed binary data [MQTT-1.5.3]. */
    data(b: Buffer) {
        this.u16(b.length)
        this.parts.push(b)
    }
    str(s: string) {
        this.data(Buffer.from(s))
    }
    raw(b: Buffer) {
        this.parts.push(b)
    }
    concat(): Buffer {
        return Buffer.concat(...this.parts)
    }
}

/** Fixed header + body [MQTT-2.2]: type/flags byte, remaining length as a base-128 varint. */
function packet(typeAndFlags: number, body: Buffer): Buffer {
    const h = new Bytes()
    h.u8(typeAndFlags)
    let n = body.length
    while (true) {
        let d = n % 128
        n = Math.floor(n / 128)
        if (n > 0) d = d + 128
        h.u8(d)
        if (n === 0) break
    }
    h.raw(body)
    return h.concat()
}

export class MqttLink {
    connected = false
    private sock: Socket = null
    private rx: Buffer = null
    private nextId = 1
    private lastTx = 0
    private lastRx = 0
    private subscriptions: string[] = []
    /** Called for every PUBLISH received. */
    onMessage: (topic: string, payload: Buffer) => void = null
    /** Called once per accepted connection, after subscriptions were sent. */
    onConnect: () => void = null

    constructor(readonly opts: MqttOptions) {}

    subscribe(filter: string) {
        this.subscriptions.push(filter)
    }

    /** Connects and reconnects forever; never throws. */
    async run() {
        let backoffMs = 500
        while (true) {
            try {
                await this.session()
                backoffMs = 500
            } catch (e) {
                console.log(`mqtt: ${(e as Error).message}`)
            }
            this.connected = false
            const s = this.sock
            this.sock = null
            if (s) await s.close()
            await ds.sleep(backoffMs)
            backoffMs = Math.min(backoffMs * 2, 10000)
        }
    }

    private async send(b: Buffer): Promise<boolean> {
        const s = this.sock
        if (!s) return false
        try {
            // one write per packet: packets never interleave
            await s.send(b)
            this.lastTx = ds.millis()
            return true
        } catch (e) {
            return false
        }
    }

    private id(): number {
        const id = this.nextId
        this.nextId = id >= 65535 ? 1 : id + 1
        return id
    }

    private connectPacket(): Buffer {
        const o = this.opts
        const b = new Bytes()
        b.str("MQTT")
        b.u8(4) // protocol level 3.1.1
        let flags = 0x02 // clean session: the meter keeps its own queue
        if (o.will) flags = flags | 0x04 | (o.will.qos << 3)
        if (o.username) flags = flags | 0x80
        if (o.password) flags = flags | 0x40
        b.u8(flags)
        b.u16(o.keepAliveS)
        b.str(o.clientId)
        if (o.will) {
            b.str(o.will.topic)
            b.data(o.will.payload)
        }
        if (o.username) b.str(o.username)
        if (o.password) b.str(o.password)
        return packet(CONNECT << 4, b.concat())
    }

    private async session() {
        const o = this.opts
        this.rx = null
        this.sock = await connect({ host: o.host, port: o.port, proto: o.proto as any, timeout: 10000 })
        this.lastRx = ds.millis()
        if (!(await this.send(this.connectPacket()))) throw new Error("connect send failed")
        while (true) {
            const chunk = await this.sock.recv(1000)
            if (chunk === null) throw new Error("connection closed")
            const now = ds.millis()
            if (chunk) {
                this.lastRx = now
                this.rx = this.rx ? this.rx.concat(chunk) : chunk
                await this.parse()
            }
            // keep alive [MQTT-3.1.2.10]: ping at half the period, give up at 1.5 periods
            const ka = o.keepAliveS * 1000
            if (now - this.lastRx > ka * 1.5) throw new Error("keep-alive timeout")
            if (this.connected && now - this.lastTx > ka / 2) await this.send(packet(PINGREQ << 4, Buffer.alloc(0)))
        }
    }

    /** Handles every complete packet in the receive buffer. */
    private async parse() {
        while (this.rx && this.rx.length >= 2) {
            const buf = this.rx
            let len = 0
            let mul = 1
            let pos = 1
            let complete = false
            while (pos < buf.length && pos <= 4) {
                const d = buf.getAt(pos, "u8")
                len = len + (d & 127) * mul
                mul = mul * 128
                pos = pos + 1
                if (d < 128) {
                    complete = true
                    break
                }
            }
            if (!complete) {
                if (pos > 4) throw new Error("malformed remaining length")
                return
            }
            if (buf.length < pos + len) return
            const header = buf.getAt(0, "u8")
            const body = buf.slice(pos, pos + len)
            this.rx = buf.length > pos + len ? buf.slice(pos + len) : null
            await this.handle(header >> 4, header & 15, body)
        }
    }

    private async handle(type: number, flags: number, body: Buffer) {
        if (type === CONNACK) {
            const rc = body.length >= 2 ? body.getAt(1, "u8") : 255
            if (rc !== 0) throw new Error(`connection refused, code ${rc}`)
            this.connected = true
            if (this.subscriptions.length) {
                const b = new Bytes()
                b.u16(this.id())
                for (const f of this.subscriptions) {
                    b.str(f)
                    b.u8(1) // QoS 1 downlinks
                }
                await this.send(packet((SUBSCRIBE << 4) | 2, b.concat()))
            }
            if (this.onConnect) this.onConnect()
        } else if (type === PUBLISH) {
            const qos = (flags >> 1) & 3
            const tlen = body.getAt(0, "u8") * 256 + body.getAt(1, "u8")
            const topic = body.slice(2, 2 + tlen).toString()
            let off = 2 + tlen
            if (qos > 0) {
                const ack = new Bytes()
                ack.raw(body.slice(off, off + 2))
                await this.send(packet(PUBACK << 4, ack.concat()))
                off = off + 2
            }
            if (this.onMessage) this.onMessage(topic, body.slice(off))
        }
        // PUBACK, SUBACK, PINGRESP: nothing to do (delivery is confirmed end to end)
    }

    /** Publishes; false when not connected or the write failed (the caller keeps the frame). */
    async publish(topic: string, payload: Buffer, qos: number): Promise<boolean> {
        if (!this.connected) return false
        const b = new Bytes()
        b.str(topic)
        if (qos > 0) b.u16(this.id())
        b.raw(payload)
        return await this.send(packet((PUBLISH << 4) | (qos << 1), b.concat()))
    }

    /** Clean disconnect: the broker discards the will [MQTT-3.14.4-3]. */
    async disconnect() {
        await this.send(packet(DISCONNECT << 4, Buffer.alloc(0)))
    }
}
