// Downlink encoders: a Downlink for a meter, open or sealed under its key.
import { citymeter } from "../gen/citymeter.js"
import { downlinkClearNonce, downlinkNonce, seal } from "../seal.js"
import protobuf from "protobufjs/minimal.js"
import { DOWN_KINDS, type DownKind } from "../topics.js"

const { Downlink } = citymeter.v1

export function encodeDownlink(d: citymeter.v1.Downlink.$Properties, key?: Uint8Array): Uint8Array {
  if (!key) return Downlink.encode(Downlink.fromObject(d)).finish()
  const kind = DOWN_KINDS.find((k) => d[k] !== undefined && d[k] !== null)
  if (!kind) throw new Error("a downlink needs a body")
  return sealDownlinkBody(key, kind, d[kind]!, downlinkClearNonce())
}

const DOWN_BODY = {
  ack: citymeter.v1.Ack,
  time: citymeter.v1.TimeSync,
  config: citymeter.v1.Config,
  resend: citymeter.v1.Resend,
  update: citymeter.v1.UpdateWindow,
}

/** A sealed Downlink: the body message of `kind` sealed under `key` with the given clear nonce. */
export function sealDownlinkBody(key: Uint8Array, kind: DownKind, body: object, clear: Uint8Array): Uint8Array {
  const type = DOWN_BODY[kind] as unknown as { encode(m: object): protobuf.Writer; fromObject(o: object): object }
  const plain = type.encode(type.fromObject(body)).finish()
  return Downlink.encode({ sealed: seal(key, downlinkNonce(kind, clear), plain), nonce: clear }).finish()
}
