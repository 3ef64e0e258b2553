// MQTT 3.1.1 packets for the meter's client (firmware/mqtt.ts): builders, parsers and a framer
// that cuts packets out of the socket's byte stream. Pure: no I/O, no timers, testable in the VM.
// Clauses cited are from OASIS MQTT Version 3.1.1 (docs.oasis-open.org/mqtt/mqtt/v3.1.1/os).

/** Control packet types, fixed header bits 7-4 [MQTT-2.2.1]. */
export const enum PacketType {
    CONNECT = 1,
    CONNACK = 2,
    PUBLISH = 3,
    PUBACK = 4,
    SUBSCRIBE = 8,
    SUBACK = 9,
    PINGREQ = 12,
    PINGRESP = 13,
    DISCONNECT = 14,
}

/** Fixed header byte 1 [MQTT-2.2]: the packet type in bits 7-4, its flags in bits 3-0. */
export const enum HeaderBits {
    TYPE_SHIFT = 4,
    FLAGS_MASK = 0x0f,
}

/**
 * Remaining length [MQTT-2.2.3]: base-128 digits, least significant first, bit 7 set on every
 * digit but the last.
 */
const enum LengthDigit {
    VALUE_MASK = 0x7f,
    CONTINUE = 0x80,
}
const LENGTH_DIGIT_BASE = 128

/** QoS levels [MQTT-4.3]. The meter publishes and subscribes at AT_LEAST_ONCE. */
export const enum QoS {
    AT_MOST_ONCE = 0,
    AT_LEAST_ONCE = 1,
    EXACTLY_ONCE = 2,
    /** Both QoS bits set: a malformed PUBLISH [MQTT-3.3.1-4]. */
    MALFORMED = 3,
}

/** CONNECT flags byte [MQTT-3.1.2.3]. */
export const enum ConnectFlag {
    /** 3.1.2.4 Clean Session: the meter keeps its own queue, the broker keeps nothing. */
    CLEAN_SESSION = 0x02,
    /** 3.1.2.5 Will Flag. */
    WILL = 0x04,
    /** 3.1.2.6 Will QoS, bits 4-3 (the QoS shifted by WILL_QOS_SHIFT). */
    WILL_QOS = 0x18,
    /** 3.1.2.7 Will Retain. */
    WILL_RETAIN = 0x20,
    /** 3.1.2.9 Password Flag. */
    PASSWORD = 0x40,
    /** 3.1.2.8 User Name Flag. */
    USERNAME = 0x80,
}

/** PUBLISH fixed header flags [MQTT-3.3.1]. */
export const enum PublishFlag {
    /** 3.3.1.3 RETAIN. */
    RETAIN = 0x01,
    /** 3.3.1.2 QoS level, bits 2-1 (the QoS shifted by PUBLISH_QOS_SHIFT). */
    QOS = 0x06,
    /** 3.3.1.1 DUP. */
    DUP = 0x08,
}

const WILL_QOS_SHIFT = 3
const PUBLISH_QOS_SHIFT = 1

/** 3.8.1: bits 3-0 of SUBSCRIBE's fixed header are 0010 [MQTT-3.8.1-1]. */
export const SUBSCRIBE_FLAGS = 0x02
/** CONNACK acknowledge flags [MQTT-3.2.2.1]. */
export const enum ConnackFlag {
    /** 3.2.2.2 Session Present (the meter always asks for a clean session). */
    SESSION_PRESENT = 0x01,
}

/** CONNACK return codes [MQTT-3.2.2.3]. */
export const enum ConnectReturnCode {
    ACCEPTED = 0,
    UNACCEPTABLE_PROTOCOL_VERSION = 1,
    IDENTIFIER_REJECTED = 2,
    SERVER_UNAVAILABLE = 3,
    BAD_USER_NAME_OR_PASSWORD = 4,
    NOT_AUTHORIZED = 5,
}

/** 3.9.3: a SUBACK return code of 0x80 is a refused subscription. */
export const SUBACK_FAILURE = 0x80
/** 3.1.2.2: protocol level 4 is MQTT 3.1.1. */
export const PROTOCOL_LEVEL = 4
/** 2.2.3: the remaining length takes at most four bytes (256 MB). */
const MAX_LENGTH_BYTES = 4
/** 3.4.1: a PUBACK's remaining length: its packet identifier. */
const PUBACK_LENGTH = 2
/** Bytes of one PUBACK: the fixed header's two and the packet identifier. */
const PUBACK_BYTES = 2 + PUBACK_LENGTH

/** Two-byte big-endian integer [MQTT-1.5.2] (the VM's getAt/setAt are little-endian). */
function getU16(b: Buffer, off: number): number {
    return b.getAt(off, "u8") * 256 + b.getAt(off + 1, "u8")
}
function setU16(b: Buffer, off: number, v: number) {
    b.setAt(off, "u8", (v >> 8) & 0xff)
    b.setAt(off + 1, "u8", v & 0xff)
}

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

export interface FixedHeader {
    type: number
    flags: number
    /** Remaining length: bytes of variable header and payload [MQTT-2.2.3]. */
    length: number
    /** Bytes of the fixed header itself (2 to 5). */
    size: number
}

/**
 * Reads the fixed header at `off` [MQTT-2.2]. Null when more bytes are needed; throws on a
 * remaining length longer than four bytes (a malformed packet: close the connection [MQTT-4.8]).
 */
export function readFixedHeader(buf: Buffer, off: number): FixedHeader | null {
    let length = 0
    let mul = 1
    let pos = off + 1
    while (true) {
        if (pos >= buf.length) return null
        const d = buf.getAt(pos, "u8")
        length = length + (d & LengthDigit.VALUE_MASK) * mul
        pos = pos + 1
        if ((d & LengthDigit.CONTINUE) === 0) break
        if (pos - off - 1 >= MAX_LENGTH_BYTES) throw new RangeError("mqtt: malformed remaining length")
        mul = mul * LENGTH_DIGIT_BASE
    }
    const b0 = buf.getAt(off, "u8")
    return { type: b0 >> HeaderBits.TYPE_SHIFT, flags: b0 & HeaderBits.FLAGS_MASK, length, size: pos - off }
}

export interface Connack {
    sessionPresent: boolean
    /** 3.2.2.3: 0 accepted; 1-5 refused (version, identifier, unavailable, credentials, not authorised). */
    returnCode: number
}

/** CONNACK [MQTT-3.2]: acknowledge flags and return code. */
export function parseConnack(body: Buffer): Connack {
    if (body.length !== 2) throw new RangeError("mqtt: bad CONNACK")
    const flags = body.getAt(0, "u8")
    return { sessionPresent: (flags & ConnackFlag.SESSION_PRESENT) !== 0, returnCode: body.getAt(1, "u8") }
}

export interface Suback {
    id: number
    /** One per requested filter: the granted QoS (0-2) or SUBACK_FAILURE [MQTT-3.9.3]. */
    codes: number[]
}

/** SUBACK [MQTT-3.9]: packet identifier, then one return code per filter. */
export function parseSuback(body: Buffer): Suback {
    if (body.length < 3) throw new RangeError("mqtt: bad SUBACK")
    const codes: number[] = []
    for (let i = 2; i < body.length; ++i) codes.push(body.getAt(i, "u8"))
    return { id: getU16(body, 0), codes }
}

export interface Publish {
    topic: string
    qos: number
    dup: boolean
    retain: boolean
    /** Packet identifier; 0 at QoS 0 (none sent). */
    id: number
    payload: Buffer
}

/** A PUBLISH's QoS from its fixed header flags [MQTT-3.3.1.2]. */
function publishQos(flags: number): number {
    return (flags & PublishFlag.QOS) >> PUBLISH_QOS_SHIFT
}

/** Packet identifier of a PUBLISH from its first bytes; 0 at QoS 0, -1 when not in `head`. */
export function publishId(flags: number, head: Buffer): number {
    if (publishQos(flags) === QoS.AT_MOST_ONCE) return 0
    if (head.length < 2) return -1
    const at = 2 + getU16(head, 0)
    return head.length >= at + 2 ? getU16(head, at) : -1
}

/** PUBLISH [MQTT-3.3]: fixed header flags, then topic, packet identifier (QoS > 0), payload. */
export function parsePublish(flags: number, body: Buffer): Publish {
    const qos = publishQos(flags)
    // 3.3.1.2: both QoS bits set is a malformed packet [MQTT-3.3.1-4]
    if (qos === QoS.MALFORMED) throw new RangeError("mqtt: PUBLISH with QoS 3")
    if (body.length < 2) throw new RangeError("mqtt: bad PUBLISH")
    const tlen = getU16(body, 0)
    let off = 2 + tlen
    if (body.length < off + (qos > QoS.AT_MOST_ONCE ? 2 : 0)) throw new RangeError("mqtt: bad PUBLISH")
    let id = 0
    if (qos > QoS.AT_MOST_ONCE) {
        id = getU16(body, off)
        off = off + 2
    }
    return {
        topic: body.slice(2, 2 + tlen).toString(),
        qos,
        dup: (flags & PublishFlag.DUP) !== 0,
        retain: (flags & PublishFlag.RETAIN) !== 0,
        id,
        payload: body.slice(off),
    }
}

/** A packet cut from the stream. */
interface PacketHeader {
    type: number
    flags: number
    /** Remaining length [MQTT-2.2.3]. */
    length: number
}

/** A packet: its body, or when it was over the limit and skipped, its first bytes. */
export type Packet =
    | (PacketHeader & {
          /** Variable header and payload. */
          body: Buffer
          head: null
      })
    | (PacketHeader & {
          body: null
          /** A skipped packet's first bytes, as far as they had arrived (at most HEAD_BYTES). */
          head: Buffer
      })

/** Bytes of a skipped packet kept for its header (a PUBLISH's topic and packet identifier). */
export const HEAD_BYTES = 128

/**
 * Cuts packets out of a byte stream with bounded memory: it holds at most one incomplete packet
 * (maxPacket + 5 bytes); a packet whose remaining length is over maxPacket is skipped as its bytes
 * arrive, never buffered. Usage: push() a chunk, then next() until it returns null.
 */
export class Framer {
    private buf: Buffer | null = null
    private off = 0
    /** Bytes of a skipped packet still to come. */
    private skip = 0

    constructor(readonly maxPacket: number) {}

    /** Bytes held: never more than maxPacket + 5 once next() has returned null. */
    held(): number {
        return this.buf ? this.buf.length - this.off : 0
    }

    push(chunk: Buffer) {
        let start = 0
        if (this.skip > 0) {
            start = Math.min(this.skip, chunk.length)
            this.skip = this.skip - start
        }
        if (start >= chunk.length) return
        const rest = start > 0 ? chunk.slice(start) : chunk
        const buf = this.buf
        this.buf = buf && buf.length > this.off ? buf.slice(this.off).concat(rest) : rest
        this.off = 0
    }

    /** The next complete (or skipped) packet; null when more bytes are needed. Throws when malformed. */
    next(): Packet | null {
        const buf = this.buf
        if (!buf) return null
        const h = readFixedHeader(buf, this.off)
        if (!h) return null
        const start = this.off + h.size
        const avail = buf.length - start
        if (h.length > this.maxPacket) {
            const take = Math.min(avail, h.length)
            const head = buf.slice(start, start + Math.min(take, HEAD_BYTES))
            this.skip = h.length - take
            this.advance(h.size + take)
            return { type: h.type, flags: h.flags, length: h.length, body: null, head }
        }
        if (avail < h.length) return null
        const body = buf.slice(start, start + h.length)
        this.advance(h.size + h.length)
        return { type: h.type, flags: h.flags, length: h.length, body, head: null }
    }

    private advance(n: number) {
        this.off = this.off + n
        if (!this.buf || this.off >= this.buf.length) {
            this.buf = null
            this.off = 0
        }
    }
}

/**
 * Reconnect delay: exponential backoff with full jitter (uniform in [minMs, minMs + cap], cap
 * doubling from baseMs to maxMs), so that meters dropped together do not come back together.
 * `attempt` counts failed sessions since the last good one; `rand` is uniform in [0, 1).
 */
export function backoffMs(attempt: number, rand: number, minMs: number, baseMs: number, maxMs: number): number {
    const cap = Math.min(maxMs, baseMs * Math.pow(2, Math.min(attempt, 20)))
    return minMs + Math.floor(rand * cap)
}
