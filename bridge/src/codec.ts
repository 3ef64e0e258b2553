// Uplink decoding: bytes → a checked domain frame, or a FrameError with a stable code. This file
// reads the envelope (size, structure, canonical encoding) and opens its seal under the meter's
// keys; codec/payload.ts checks the body, codec/frames.ts has the limits, reasons and frame
// shapes, codec/downlink.ts the downlink encoders.
import { citymeter } from "./gen/citymeter.js"
import { open, uplinkNonce } from "./seal.js"
import protobuf from "protobufjs/minimal.js"
import type { UpKind } from "./topics.js"
import { FrameError, MAX_PAYLOAD_BYTES, type FrameMeta, type SealContext, type UplinkFrame } from "./codec/frames.js"
import { decodeAlarm, decodeBirth, decodeReadings, num } from "./codec/payload.js"

const { Uplink } = citymeter.v1

/**
 * Decodes and validates one uplink payload received on a topic of the given kind. Every byte is
 * hostile until checked: the size, the structure (protobufjs), the encoding (it must be exactly
 * the canonical bytes the firmware writes: protobufjs skips unknown fields and accepts
 * non-minimal varints, so a bit-flipped frame often still decodes), the kind, and every value.
 */
export function decodeUplink(
  kind: UpKind,
  payload: Uint8Array,
  nowS = Date.now() / 1000,
  seal: SealContext = { policy: "open", keys: [] },
): UplinkFrame {
  return openEnvelope(readEnvelope(kind, payload), nowS, seal)
}

/**
 * An uplink's envelope: read once, before the meter's keys are known (ingest reads it on arrival
 * and opens it against the meter's row later).
 */
export interface UplinkEnvelope {
  kind: UpKind
  uplink: citymeter.v1.Uplink
  /** A will with no payload at all. */
  empty: boolean
}

/** decodeUplink's first half: the size, the structure and the canonical encoding. */
export function readEnvelope(kind: UpKind, payload: Uint8Array): UplinkEnvelope {
  if (payload.length > MAX_PAYLOAD_BYTES)
    throw new FrameError("CM_ERR_OVERSIZE", `${payload.length} bytes, at most ${MAX_PAYLOAD_BYTES}`)
  return { kind, uplink: decodeCanonical(payload), empty: payload.length === 0 }
}

/** The envelope's (boot, seq) in clear (sealed frames carry them too); undefined without a seq. */
export function envelopeId(e: UplinkEnvelope): { boot: number; seq: number } | undefined {
  return e.uplink.seq ? { boot: num(e.uplink.boot), seq: num(e.uplink.seq) } : undefined
}

/** decodeUplink's second half: the seal under the meter's keys, the kind, and every value. */
export function openEnvelope(envelope: UplinkEnvelope, nowS: number, seal: SealContext): UplinkFrame {
  const { kind } = envelope
  let u = envelope.uplink
  let keyIndex: number | null = null
  if (u.body === "sealed") [u, keyIndex] = unseal(kind, u, seal)
  else if (seal.policy === "sealed")
    throw new FrameError("CM_ERR_UNSEALED", `an open ${u.body ?? "empty"} frame; this meter's frames must be sealed`)
  const meta: FrameMeta = { link: num(u.link), keyIndex }
  // A will with no payload at all reads as a death of boot 0 (stale, for ingest); any other frame
  // needs its body: `08 01` alone (a boot and nothing else) is no death, nor is a downlink.
  const body = u.body ?? (kind === "death" && envelope.empty ? "death" : undefined)
  if (body !== kind) throw new FrameError("CM_ERR_KIND_MISMATCH", `body ${body ?? "none"} on an up/${kind} topic`)
  switch (body) {
    case "readings":
      return decodeReadings(u, nowS, meta)
    case "birth":
      return { ...decodeBirth(u), ...meta }
    case "alarm":
      return { ...decodeAlarm(u, nowS), ...meta }
    default:
      // An empty will payload decodes as a death of boot 0: ingest treats it as stale.
      return { kind: "death", boot: num(u.boot), ...meta }
  }
}

function decodeCanonical(payload: Uint8Array): citymeter.v1.Uplink {
  let u: citymeter.v1.Uplink
  try {
    u = Uplink.decode(payload)
  } catch (e) {
    throw new FrameError("CM_ERR_DECODE", `not a citymeter.v1.Uplink: ${(e as Error).message}`)
  }
  if (!isCanonical(u, payload))
    throw new FrameError("CM_ERR_NONCANONICAL", `${payload.length} bytes decode, but are not their canonical encoding`)
  return u
}

/**
 * Opens a sealed frame with the meter's keys; the nonce binds the topic's kind and the clear boot,
 * seq and link. The plaintext must be exactly an Uplink holding the body, nothing else.
 */
function unseal(kind: UpKind, outer: citymeter.v1.Uplink, ctx: SealContext): [citymeter.v1.Uplink, number] {
  if (ctx.keys.length === 0)
    throw new FrameError("CM_ERR_SEAL", "a sealed frame, and the registry has no key for this meter")
  const [boot, seq, link] = [num(outer.boot), num(outer.seq), num(outer.link)]
  const nonce = uplinkNonce(kind, boot, seq, link)
  for (let i = 0; i < ctx.keys.length; i++) {
    const plain = open(ctx.keys[i], nonce, outer.sealed!)
    if (!plain) continue
    // the plaintext is the body message of the topic's kind, canonical like any frame
    const inner = decodeCanonical(wrapBody(kind, plain))
    inner.boot = boot
    inner.seq = seq
    inner.link = link
    return [inner, i]
  }
  throw new FrameError("CM_ERR_SEAL", `the tag does not verify under the meter's key${ctx.keys.length > 1 ? "s" : ""}`)
}

/** The Uplink that carries `body` as its `kind` (field number + length + bytes). */
function wrapBody(kind: UpKind, body: Uint8Array): Uint8Array {
  const w = protobuf.Writer.create()
  w.uint32((BODY_FIELD[kind] << 3) | 2).bytes(body)
  return w.finish()
}
const BODY_FIELD: Record<UpKind, number> = { readings: 10, birth: 11, alarm: 12, death: 13 }

function isCanonical(u: citymeter.v1.Uplink, payload: Uint8Array): boolean {
  const again = Uplink.encode(u).finish()
  return again.length === payload.length && Buffer.compare(again, payload) === 0
}
