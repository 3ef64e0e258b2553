// Protobuf wire format for DeviceScript (no protobuf runtime exists there).
// https://protobuf.dev/programming-guides/encoding/ — varint (wire type 0), LEN (wire type 2),
// packed repeated scalars, zigzag for sint32/sint64. Proto3: zero values are not written.
//
// DeviceScript numbers are doubles and its bit operators are 32-bit, so varints use division:
// integers are exact up to 2^52 in VM 2.16.4 (2^53 - 1 comes out as 2^53 - 2), which bounds every
// uint64 we send: 4.5e15 mL totals, 4.5e15 Wh.

export const WIRE_VARINT = 0
export const WIRE_I64 = 1
export const WIRE_LEN = 2
export const WIRE_I32 = 5

/**
 * Proto3 omits zero (and unset) scalars. Not `!v`: DeviceScript's truthiness is wrong for numbers
 * outside int32 (`!4294967296` is true in VM 2.16.4), so compare explicitly.
 */
export function isUnset(v: number | undefined | null): v is undefined | null | 0 {
    return v === undefined || v === null || v === 0
}

export function zigzag(v: number): number {
    return v >= 0 ? v * 2 : -v * 2 - 1
}

export function unzigzag(v: number): number {
    const half = Math.floor(v / 2)
    return v - half * 2 === 0 ? half : -half - 1
}

export class PbWriter {
    private buf: Buffer
    private len = 0

    constructor(capacity: number = 64) {
        this.buf = Buffer.alloc(capacity)
    }

    private ensure(n: number) {
        if (this.len + n <= this.buf.length) return
        const grown = Buffer.alloc(Math.max(this.buf.length * 2, this.len + n))
        grown.blitAt(0, this.buf, 0, this.len)
        this.buf = grown
    }

    private byte(b: number) {
        this.ensure(1)
        this.buf.setAt(this.len, "u8", b)
        this.len = this.len + 1
    }

    /** Unsigned varint of a non-negative integer below 2^52. */
    varint(v: number) {
        while (v >= 128) {
            const q = Math.floor(v / 128)
            this.byte(v - q * 128 + 128)
            v = q
        }
        this.byte(v)
    }

    private tag(field: number, wire: number) {
        this.varint(field * 8 + wire)
    }

    private raw(b: Buffer) {
        this.ensure(b.length)
        this.buf.blitAt(this.len, b, 0, b.length)
        this.len = this.len + b.length
    }

    /** uint32, uint64, enum */
    uint(field: number, v: number | undefined) {
        if (isUnset(v)) return
        this.tag(field, WIRE_VARINT)
        this.varint(v)
    }

    /** sint32, sint64 */
    sint(field: number, v: number | undefined) {
        if (isUnset(v)) return
        this.tag(field, WIRE_VARINT)
        this.varint(zigzag(v))
    }

    bool(field: number, v: boolean | undefined) {
        if (!v) return
        this.tag(field, WIRE_VARINT)
        this.byte(1)
    }

    bytes(field: number, b: Buffer) {
        this.tag(field, WIRE_LEN)
        this.varint(b.length)
        this.raw(b)
    }

    /** fixed32: 4 bytes, little-endian (wire type 5); an unset or zero value is not written. */
    fixed32(field: number, v: number | undefined) {
        if (isUnset(v)) return
        this.tag(field, WIRE_I32)
        for (let i = 0; i < 4; ++i) {
            const q = Math.floor(v / 256)
            this.byte(v - q * 256)
            v = q
        }
    }

    string(field: number, s: string | undefined) {
        if (!s || !s.length) return
        this.bytes(field, Buffer.from(s))
    }

    /** A set submessage is written even when empty (as protobufjs does). */
    message(field: number, sub: PbWriter) {
        this.bytes(field, sub.finish())
    }

    packedUint(field: number, values: number[] | undefined) {
        if (!values || !values.length) return
        const sub = new PbWriter(values.length * 3)
        for (const v of values) sub.varint(v)
        this.message(field, sub)
    }

    packedSint(field: number, values: number[] | undefined) {
        if (!values || !values.length) return
        const sub = new PbWriter(values.length * 3)
        for (const v of values) sub.varint(zigzag(v))
        this.message(field, sub)
    }

    finish(): Buffer {
        return this.buf.slice(0, this.len)
    }
}

export class PbReader {
    pos = 0
    /** Field number of the last tag read, and its wire type. */
    field = 0
    wire = 0

    constructor(readonly buf: Buffer) {}

    eof() {
        return this.pos >= this.buf.length
    }

    varint(): number {
        let v = 0
        let mul = 1
        while (true) {
            if (this.pos >= this.buf.length) throw new RangeError("pb: truncated varint")
            const b = this.buf.getAt(this.pos, "u8")
            this.pos = this.pos + 1
            v = v + (b & 0x7f) * mul
            if (b < 128) return v
            mul = mul * 128
            if (mul > 2 ** 63) throw new RangeError("pb: varint too long")
        }
    }

    /** Reads the next tag into field/wire; false at the end. */
    next(): boolean {
        if (this.eof()) return false
        const t = this.varint()
        this.field = Math.floor(t / 8)
        this.wire = t - this.field * 8
        return true
    }

    bytes(): Buffer {
        const n = this.varint()
        if (this.pos + n > this.buf.length) throw new RangeError("pb: truncated bytes")
        const b = this.buf.slice(this.pos, this.pos + n)
        this.pos = this.pos + n
        return b
    }

    skip() {
        if (this.wire === WIRE_VARINT) this.varint()
        else if (this.wire === WIRE_LEN) this.bytes()
        else if (this.wire === WIRE_I64) this.pos = this.pos + 8
        else if (this.wire === WIRE_I32) this.pos = this.pos + 4
        else throw new RangeError("pb: bad wire type " + this.wire)
    }
}
