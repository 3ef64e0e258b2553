// MQTT 3.1.1 packets the meter's client (firmware/mqtt.ts) sends: CONNECT, PUBLISH, SUBSCRIBE,
// PUBACK, PINGREQ, DISCONNECT, each built whole with its fixed header. Pure: no I/O, no timers,
// testable in the VM. Clauses cited are from OASIS MQTT Version 3.1.1
// (docs.oasis-open.org/mqtt/mqtt/v3.1.1/os).
import {
    ConnectFlag,
    HeaderBits,
    LENGTH_DIGIT_BASE,
    LengthDigit,
    PacketType,
    PROTOCOL_LEVEL,
    PUBACK_BYTES,
    PUBACK_LENGTH,
    PUBLISH_QOS_SHIFT,
    QoS,
    setU16,
    SUBSCRIBE_FLAGS,
    WILL_QOS_SHIFT,
} from "./mqtt-protocol"

/** Big-endian integers and length-prefixed strings [MQTT-1.5.2, 1.5.3], written in parts. */
class Writer {
    parts: Buffer[] = []
    u8(v: number) {
        const b = Buffer.alloc(1)
        b.setAt(0, "u8", v)
        this.parts.push(b)
    }
    u16(v: number) {
        const b = Buffer.alloc(2)
        setU16(b, 0, v)
        this.parts.push(b)
    }
    /** Two-byte length, then the bytes [MQTT-1.5.3]. */
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

/** Fixed header [MQTT-2.2]: type and flags, the remaining length as a base-128 varint, then the body. */
export function packet(type: number, flags: number, body: Buffer): Buffer {
    const h = new Writer()
    h.u8((type << HeaderBits.TYPE_SHIFT) | flags)
    let n = body.length
    while (true) {
        let d = n % LENGTH_DIGIT_BASE
        n = Math.floor(n / LENGTH_DIGIT_BASE)
        if (n > 0) d = d | LengthDigit.CONTINUE
        h.u8(d)
        if (n === 0) break
    }
    h.raw(body)
    return h.concat()
}

export interface Will {
    topic: string
    payload: Buffer
    qos: number
}

export interface ConnectOptions {
    clientId: string
    username?: string
    password?: string
    /** Seconds [MQTT-3.1.2.10]. */
    keepAliveS: number
    will?: Will
}

/** CONNECT [MQTT-3.1]: protocol name, level, flags, keep alive, then the payload in flag order. */
export function encodeConnect(o: ConnectOptions): Buffer {
    const b = new Writer()
    b.str("MQTT")
    b.u8(PROTOCOL_LEVEL)
    let flags = ConnectFlag.CLEAN_SESSION
    if (o.will) flags = flags | ConnectFlag.WILL | (o.will.qos << WILL_QOS_SHIFT)
    if (o.username) flags = flags | ConnectFlag.USERNAME
    if (o.password) flags = flags | ConnectFlag.PASSWORD
    b.u8(flags)
    b.u16(o.keepAliveS)
    b.str(o.clientId)
    // 3.1.3: client id, will topic, will message, user name, password
    if (o.will) {
        b.str(o.will.topic)
        b.data(o.will.payload)
    }
    if (o.username) b.str(o.username)
    if (o.password) b.str(o.password)
    return packet(PacketType.CONNECT, 0, b.concat())
}

/** PUBLISH [MQTT-3.3]: topic, a packet identifier when QoS > 0 [MQTT-2.3.1], the payload. */
export function encodePublish(topic: string, payload: Buffer, qos: number, id: number): Buffer {
    const b = new Writer()
    b.str(topic)
    if (qos > QoS.AT_MOST_ONCE) b.u16(id)
    b.raw(payload)
    return packet(PacketType.PUBLISH, qos << PUBLISH_QOS_SHIFT, b.concat())
}

/** SUBSCRIBE [MQTT-3.8]: packet identifier, then each filter with its requested QoS. */
export function encodeSubscribe(id: number, filters: string[], qos: number): Buffer {
    const b = new Writer()
    b.u16(id)
    for (const f of filters) {
        b.str(f)
        b.u8(qos)
    }
    return packet(PacketType.SUBSCRIBE, SUBSCRIBE_FLAGS, b.concat())
}

/** PUBACK [MQTT-3.4]: the PUBLISH's packet identifier. */
export function encodePuback(id: number): Buffer {
    return encodePubacks([id])
}

/** Several PUBACKs back to back, for one socket write. */
export function encodePubacks(ids: number[]): Buffer {
    const b = Buffer.alloc(PUBACK_BYTES * ids.length)
    for (let i = 0; i < ids.length; ++i) {
        const at = PUBACK_BYTES * i
        b.setAt(at, "u8", PacketType.PUBACK << HeaderBits.TYPE_SHIFT)
        b.setAt(at + 1, "u8", PUBACK_LENGTH)
        setU16(b, at + 2, ids[i])
    }
    return b
}

/** PINGREQ [MQTT-3.12]. */
export function encodePingreq(): Buffer {
    return packet(PacketType.PINGREQ, 0, Buffer.alloc(0))
}

/** DISCONNECT [MQTT-3.14]: the broker then discards the will [MQTT-3.14.4-3]. */
export function encodeDisconnect(): Buffer {
    return packet(PacketType.DISCONNECT, 0, Buffer.alloc(0))
}
