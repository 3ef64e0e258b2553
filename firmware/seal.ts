// Sealed frames, meter side (proto/topics.md "Sealed frames"; the bridge's side: bridge/src/seal.ts).
// AES-256-CCM from @devicescript/crypto, 8-byte tag, under the meter's 256-bit key (secret setting
// SEAL_KEY, written by `citymeter provision`). DeviceScript's CCM has no associated data, so the
// clear fields are bound into the 13-byte nonce:
//   uplink:   [kind] [boot, 4 B BE] [seq (readings, alarm) or link (birth, death), 4 B BE] [0 0 0 0]
//   downlink: [kind] [the downlink's 12 clear nonce bytes: Unix ms, 8 B BE; 4 random bytes]
import { decrypt, digest, encrypt } from "@devicescript/crypto"

export const TAG_BYTES = 8
export const NONCE_BYTES = 13

/** Nonce byte 0 per kind: uplinks 0x01-0x04, downlinks 0x81-0x85. */
export const KIND_READINGS = 0x01
export const KIND_BIRTH = 0x02
export const KIND_ALARM = 0x03
export const KIND_DEATH = 0x04
export const KIND_ACK = 0x81
export const KIND_TIME = 0x82
export const KIND_CONFIG = 0x83
export const KIND_RESEND = 0x84
export const KIND_UPDATE = 0x85

/** Downlink kind (topic level) to its nonce byte; 0 for an unknown kind. */
export function downKindCode(kind: string): number {
    if (kind === "ack") return KIND_ACK
    if (kind === "time") return KIND_TIME
    if (kind === "config") return KIND_CONFIG
    if (kind === "resend") return KIND_RESEND
    if (kind === "update") return KIND_UPDATE
    return 0
}

/** Big-endian u32 without 32-bit integer arithmetic (values up to 2^32 - 1). */
function putU32BE(b: Buffer, at: number, v: number) {
    for (let i = 3; i >= 0; --i) {
        const q = Math.floor(v / 256)
        b.setAt(at + i, "u8", v - q * 256)
        v = q
    }
}

export function uplinkNonce(kind: number, boot: number, counter: number): Buffer {
    const n = Buffer.alloc(NONCE_BYTES)
    n.setAt(0, "u8", kind)
    putU32BE(n, 1, boot)
    putU32BE(n, 5, counter)
    return n
}

export function downlinkNonce(kind: number, clear: Buffer): Buffer {
    const n = Buffer.alloc(NONCE_BYTES)
    n.setAt(0, "u8", kind)
    n.blitAt(1, clear, 0, NONCE_BYTES - 1)
    return n
}

/** Ciphertext followed by the tag. */
export function seal(key: Buffer, nonce: Buffer, plain: Buffer): Buffer {
    return encrypt({ data: plain, algo: "aes-256-ccm", key, iv: nonce, tagLength: TAG_BYTES })
}

/** The plaintext, or undefined when the tag does not verify. */
export function open(key: Buffer, nonce: Buffer, sealed: Buffer): Buffer | undefined {
    if (sealed.length < TAG_BYTES) return undefined
    try {
        const plain = decrypt({ data: sealed, algo: "aes-256-ccm", key, iv: nonce, tagLength: TAG_BYTES })
        return plain ? plain : undefined
    } catch {
        return undefined
    }
}

/** A key from its 64 hex digits (the SEAL_KEY setting); undefined when it is not one. */
export function parseKey(hex: string): Buffer | undefined {
    if (!hex || hex.length !== 64) return undefined
    const b = Buffer.from(hex, "hex")
    return b.length === 32 ? b : undefined
}

/** The key's public id (Birth.key_id): the first 4 bytes of its SHA-256, big-endian. */
export function keyId(key: Buffer): number {
    const h = digest("sha256", key)
    let v = 0
    for (let i = 0; i < 4; ++i) v = v * 256 + h.getAt(i, "u8")
    return v
}

/** Milliseconds of a downlink's clear nonce (its first 8 bytes, big-endian): replays are refused by it. */
export function nonceMillis(clear: Buffer): number {
    let v = 0
    for (let i = 0; i < 8; ++i) v = v * 256 + clear.getAt(i, "u8")
    return v
}
