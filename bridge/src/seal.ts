// Sealed frames (proto/topics.md "Sealed frames"): AES-256-CCM with an 8-byte tag under a
// per-meter 256-bit key, end to end from meter to bridge, whatever the transport (plain MQTT on
// the Pico W, which has no TLS). The firmware's side is firmware/seal.ts.
//
// DeviceScript's CCM takes no associated data, so what must stay readable is bound into the
// 13-byte nonce instead: a flipped boot, seq, link or kind changes the nonce and the tag fails.
//   uplink:   [kind] [boot, 4 B BE] [seq (readings, alarm) or link (birth, death), 4 B BE] [0 0 0 0]
//   downlink: [kind] [the downlink's 12 clear nonce bytes: Unix ms, 8 B BE; 4 random bytes]
// (boot, seq) never repeats for a meter: boot persists and increments, and a meter that lost it
// starts at a random boot; link counts the connections of a boot. Kinds keep directions apart.
import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto"
import type { DownKind, UpKind } from "./topics.js"

export const KEY_BYTES = 32
export const TAG_BYTES = 8
export const NONCE_BYTES = 13

/** Nonce byte 0 per kind: uplinks 0x01–0x04, downlinks 0x81–0x85. */
export const KIND_CODE: Record<UpKind | DownKind, number> = {
  readings: 0x01,
  birth: 0x02,
  alarm: 0x03,
  death: 0x04,
  ack: 0x81,
  time: 0x82,
  config: 0x83,
  resend: 0x84,
  update: 0x85,
}

export function uplinkNonce(kind: UpKind, boot: number, seq: number, link: number): Buffer {
  const n = Buffer.alloc(NONCE_BYTES)
  n[0] = KIND_CODE[kind]
  n.writeUInt32BE(boot >>> 0, 1)
  n.writeUInt32BE((kind === "readings" || kind === "alarm" ? seq : link) >>> 0, 5)
  return n
}

export function downlinkNonce(kind: DownKind, clear: Uint8Array): Buffer {
  if (clear.length !== NONCE_BYTES - 1) throw new Error(`downlink nonce must be ${NONCE_BYTES - 1} bytes`)
  return Buffer.concat([Buffer.from([KIND_CODE[kind]]), clear])
}

/** The clear nonce bytes of a downlink sent at `nowMs`: Unix ms (8 B BE) then 4 random bytes. */
export function downlinkClearNonce(nowMs = Date.now(), random: Uint8Array = randomBytes(4)): Buffer {
  const b = Buffer.alloc(NONCE_BYTES - 1)
  b.writeBigUInt64BE(BigInt(Math.floor(nowMs)), 0)
  Buffer.from(random).copy(b, 8, 0, 4)
  return b
}

/** Ciphertext followed by the 8-byte tag. */
export function seal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array): Buffer {
  const c = createCipheriv("aes-256-ccm", key, nonce, { authTagLength: TAG_BYTES })
  const body = Buffer.concat([c.update(plaintext), c.final()])
  return Buffer.concat([body, c.getAuthTag()])
}

/** The plaintext, or undefined when the tag does not verify under this key and nonce. */
export function open(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array): Buffer | undefined {
  if (sealed.length < TAG_BYTES) return undefined
  const body = sealed.subarray(0, sealed.length - TAG_BYTES)
  const d = createDecipheriv("aes-256-ccm", key, nonce, { authTagLength: TAG_BYTES })
  d.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES))
  try {
    return Buffer.concat([d.update(body), d.final()])
  } catch {
    return undefined
  }
}

/** A key's public id (Birth.key_id): the first 4 bytes of its SHA-256, big-endian. */
export function keyId(key: Uint8Array): number {
  return createHash("sha256").update(key).digest().readUInt32BE(0)
}

export function newKey(): Buffer {
  return randomBytes(KEY_BYTES)
}

/** A key given as 64 hex digits (settings, CLI, API); undefined when it is not one. */
export function parseKey(hex: string): Buffer | undefined {
  return /^[0-9a-fA-F]{64}$/.test(hex) ? Buffer.from(hex, "hex") : undefined
}
