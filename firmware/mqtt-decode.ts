// MQTT 3.1.1 packets the meter's client (firmware/mqtt.ts) receives: the fixed header, CONNACK,
// SUBACK and PUBLISH parsers, and a framer that cuts packets out of the socket's byte stream. Pure:
// no I/O, no timers, testable in the VM. Clauses cited are from OASIS MQTT Version 3.1.1
// (docs.oasis-open.org/mqtt/mqtt/v3.1.1/os).
import {
    ConnackFlag,
    getU16,
    HeaderBits,
    LENGTH_DIGIT_BASE,
    LengthDigit,
    MAX_LENGTH_BYTES,
    PUBLISH_QOS_SHIFT,
    PublishFlag,
    QoS,
} from "./mqtt-protocol"

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
