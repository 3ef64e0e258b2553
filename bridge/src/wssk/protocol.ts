// WSSK, the DeviceScript runtime's own cloud link (runtime/devicescript/network/wssk.c,
// wssk_health.c, websock_conn.c; DeviceScript 2.16), as the cloud side speaks it. Written from the
// protocol (docs/ota-spike.md "The protocol"); this file holds the pure parts, without sockets:
//   - transport: a WebSocket (RFC 6455) the device opens to ws[s]://host:port/<path>, offering the
//     subprotocol `devs-key-<32 hex>`: its 16 random bytes. Device frames are masked; ours must not
//     be, must be binary, minimally length-encoded, and a whole message must fit the device's
//     270-byte receive buffer (websock_conn.c MAX_MESSAGE);
//   - handshake: we send a plain hello (u32 LE magic 0xcee428ca, u32 LE version 2, our 16 random
//     bytes); both sides derive the session key HKDF-SHA256(ikm = the meter's 32-byte link key, no
//     salt, info = device random ‖ our random); each side then sends an encrypted auth of 32 zero
//     bytes. Only a side holding the key can make an auth the other side opens: both are proven;
//   - messages: AES-256-CCM(plain) ‖ 4-byte tag, a 13-byte counter nonce per direction (device →
//     endpoint starts 01 00…, endpoint → device 02 00…), incremented big-endian after every message;
//   - commands: the first plain byte (WSSK below).
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from "node:crypto"

export const WSSK = {
  /** u16 LE mask: what the device streams (STREAM_DMESG). */
  SetStreaming: 0x90,
  PingDevice: 0x91,
  /** The device's ping; echoed, it feeds the device's 32 s watchdog. */
  PingCloud: 0x92,
  /** SHA-256 of the program image the runtime holds, answered 0x93 ‖ 32 bytes. */
  GetHash: 0x93,
  /** u32 LE size (a multiple of 32), then chunks of it, then finish; each answered with its code or 0xff. */
  DeployStart: 0x94,
  DeployWrite: 0x95,
  DeployFinish: 0x96,
  C2d: 0x97,
  D2c: 0x98,
  JacdacPacket: 0x99,
  /** Device log text (after SetStreaming with STREAM_DMESG). */
  Dmesg: 0x9a,
  ExceptionReport: 0x9b,
  Error: 0xff,
} as const
export const STREAM_DMESG = 0x02

export const MAGIC = 0xcee428ca
export const VERSION = 2
/** The link key and the session key: 32 bytes. */
export const LINK_KEY_BYTES = 32
export const RANDOM_BYTES = 16
export const TAG_BYTES = 4
export const NONCE_BYTES = 13
/** websock_conn.c MAX_MESSAGE: the device's buffer for one message with its frame header. */
export const DEVICE_MAX_MESSAGE = 270
/**
 * The most a device message may hold, ciphertext and tag (its send buffer is the same 270 bytes);
 * a longer one closes the link: nothing the runtime sends comes near it.
 */
export const MAX_DEVICE_MESSAGE = 512
/** A deploy chunk: a multiple of 32 (devsmgr_deploy_write) whose message fits the 270-byte buffer. */
export const DEPLOY_CHUNK = 224
/** devsmgr_deploy_start: an image size must be a multiple of this. */
export const DEPLOY_ALIGN = 32
/** The path a meter's link opens: /wssk/<meter id> (the meter id's rule: topics.ts). */
export const LINK_PATH_PREFIX = "/wssk/"

/** Big-endian increment of a CCM nonce, wrapping. */
export function bumpNonce(nonce: Buffer) {
  for (let i = nonce.length - 1; i >= 0; i--) {
    nonce[i] = (nonce[i] + 1) & 0xff
    if (nonce[i] !== 0) return
  }
}

/** The first nonce of a direction: 01 00… for the device's messages, 02 00… for ours. */
export function firstNonce(from: "device" | "endpoint") {
  const n = Buffer.alloc(NONCE_BYTES)
  n[0] = from === "device" ? 1 : 2
  return n
}

export function sealMessage(key: Buffer, nonce: Buffer, plain: Buffer): Buffer {
  const c = createCipheriv("aes-256-ccm", key, nonce, { authTagLength: TAG_BYTES })
  const body = Buffer.concat([c.update(plain), c.final()])
  return Buffer.concat([body, c.getAuthTag()])
}

/** The plain text, or undefined when the tag does not verify. */
export function openMessage(key: Buffer, nonce: Buffer, msg: Buffer): Buffer | undefined {
  if (msg.length < TAG_BYTES) return undefined
  const d = createDecipheriv("aes-256-ccm", key, nonce, { authTagLength: TAG_BYTES })
  d.setAuthTag(msg.subarray(msg.length - TAG_BYTES))
  const plain = d.update(msg.subarray(0, msg.length - TAG_BYTES))
  try {
    d.final()
    return plain
  } catch {
    return undefined
  }
}

/** HKDF-SHA256(link key, no salt, device random ‖ endpoint random): the session's key. */
export function sessionKey(linkKey: Uint8Array, deviceRandom: Buffer, endpointRandom: Buffer): Buffer {
  const info = Buffer.concat([deviceRandom, endpointRandom])
  return Buffer.from(hkdfSync("sha256", linkKey, Buffer.alloc(0), info, LINK_KEY_BYTES))
}

/** The plain hello the endpoint opens with: magic, version, its random. */
export function helloMessage(endpointRandom: Buffer): Buffer {
  const hello = Buffer.alloc(8 + RANDOM_BYTES)
  hello.writeUInt32LE(MAGIC, 0)
  hello.writeUInt32LE(VERSION, 4)
  endpointRandom.copy(hello, 8)
  return hello
}

/** The device's random from its subprotocol `devs-key-<32 hex>`, or undefined. */
export function deviceRandomOf(protocol: string): Buffer | undefined {
  const m = /^devs-key-([0-9a-f]{32})$/i.exec(protocol.trim())
  return m ? Buffer.from(m[1], "hex") : undefined
}

/** Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 4.2.2). */
export const wsAccept = (wsKey: string) =>
  createHash("sha1")
    .update(wsKey + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
    .digest("base64")

/** One unmasked, final, minimally length-encoded WebSocket frame. */
export function wsFrame(opcode: number, payload: Buffer): Buffer {
  const n = payload.length
  if (n >= 0x10000) throw new Error(`WSSK: a ${n}-byte frame is over the device's 64 KB limit`)
  const head = n < 126 ? Buffer.from([0x80 | opcode, n]) : Buffer.from([0x80 | opcode, 126, n >> 8, n & 0xff])
  return Buffer.concat([head, payload])
}

/** What the device's frames carry, in order. */
export type WsEvent =
  | { kind: "message"; data: Buffer }
  | { kind: "ping"; data: Buffer }
  | { kind: "close"; code: number }
  | { kind: "error"; why: string }

/**
 * Reads the device's masked frames from a byte stream, with a bound: a message (its fragments
 * together) or a control frame over `maxMessage` bytes is an error, and so is an unmasked frame or
 * an opcode the link does not use. After an error it reads nothing more.
 */
export class WsReader {
  private buf: Buffer = Buffer.alloc(0)
  private parts: Buffer[] = []
  private partBytes = 0
  private failed = false
  constructor(private readonly maxMessage = MAX_DEVICE_MESSAGE) {}

  push(chunk: Buffer): WsEvent[] {
    if (this.failed) return []
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk
    const out: WsEvent[] = []
    const fail = (why: string) => {
      this.failed = true
      this.buf = Buffer.alloc(0)
      out.push({ kind: "error", why })
      return out
    }
    for (;;) {
      const b = this.buf
      if (b.length < 2) return out
      const fin = (b[0] & 0x80) !== 0
      const opcode = b[0] & 0x0f
      if (!(b[1] & 0x80)) return fail("unmasked device frame")
      let len = b[1] & 0x7f
      let at = 2
      if (len === 126) {
        if (b.length < 4) return out
        len = b.readUInt16BE(2)
        at = 4
      } else if (len === 127) {
        if (b.length < 10) return out
        const big = b.readBigUInt64BE(2)
        len = big > BigInt(this.maxMessage) ? this.maxMessage + 1 : Number(big)
        at = 10
      }
      if (this.partBytes + len > this.maxMessage) return fail(`a device message over ${this.maxMessage} bytes`)
      if (b.length < at + 4 + len) return out
      const mask = b.subarray(at, at + 4)
      const data = Buffer.from(b.subarray(at + 4, at + 4 + len))
      for (let i = 0; i < data.length; i++) data[i] ^= mask[i & 3]
      this.buf = b.subarray(at + 4 + len)
      if (opcode === 0x8) {
        out.push({ kind: "close", code: data.length >= 2 ? data.readUInt16BE(0) : 1005 })
        this.failed = true
        return out
      }
      if (opcode === 0x9) out.push({ kind: "ping", data })
      else if (opcode === 0xa) continue
      else if (opcode !== 0x0 && opcode !== 0x2) return fail(`opcode ${opcode}`)
      else {
        this.parts.push(data)
        this.partBytes += len
        if (fin) {
          out.push({ kind: "message", data: Buffer.concat(this.parts) })
          this.parts = []
          this.partBytes = 0
        }
      }
    }
  }
}

/**
 * The endpoint's side of one session's crypto: the hello, our auth, then every message each way
 * under its own nonce counter. `open` fails (undefined) on the first bad tag and for ever after.
 */
export class WsskSession {
  readonly endpointRandom: Buffer
  private readonly key: Buffer
  private readonly rx = firstNonce("device")
  private readonly tx = firstNonce("endpoint")
  private broken = false
  constructor(linkKey: Uint8Array, deviceRandom: Buffer, endpointRandom: Buffer = randomBytes(RANDOM_BYTES)) {
    this.endpointRandom = endpointRandom
    this.key = sessionKey(linkKey, deviceRandom, endpointRandom)
  }

  /** The two messages the endpoint opens with: the plain hello, then its encrypted auth. */
  opening(): Buffer[] {
    return [helloMessage(this.endpointRandom), this.seal(Buffer.alloc(LINK_KEY_BYTES))]
  }

  seal(plain: Buffer): Buffer {
    const msg = sealMessage(this.key, this.tx, plain)
    bumpNonce(this.tx)
    return msg
  }

  open(msg: Buffer): Buffer | undefined {
    if (this.broken) return undefined
    const plain = openMessage(this.key, this.rx, msg)
    bumpNonce(this.rx)
    if (!plain) this.broken = true
    return plain
  }
}

/** Whether a device's first message (opened) is the auth: 32 zero bytes. */
export const isAuth = (plain: Buffer) => plain.length === LINK_KEY_BYTES && plain.every((b) => b === 0)

/** The meter id of a link path /wssk/<id>, or undefined (checked by the caller against the id rule). */
export function meterIdOfPath(path: string): string | undefined {
  if (!path.startsWith(LINK_PATH_PREFIX)) return undefined
  const id = path.slice(LINK_PATH_PREFIX.length)
  return id.length && !/[/?#%]/.test(id) ? id : undefined
}

/**
 * The connection string the runtime reads (wssk_health.c set_conn_string):
 * ws[s]://wssk:<64 hex key>@host[:port]/wssk/<meter id>. `base` is the endpoint as meters reach it,
 * ws://host:port or wss://host[:port] (no path, no credentials).
 */
export function connectionString(base: string, meterId: string, linkKey: Uint8Array): string {
  if (linkKey.length !== LINK_KEY_BYTES) throw new Error(`a WSSK link key is ${LINK_KEY_BYTES} bytes`)
  const url = new URL(base)
  if (url.protocol !== "ws:" && url.protocol !== "wss:")
    throw new Error(`a WSSK endpoint URL is ws://host:port or wss://host:port (got ${base})`)
  if (url.username || url.password || (url.pathname && url.pathname !== "/") || url.search || url.hash)
    throw new Error(`a WSSK endpoint URL has no credentials, path, query or fragment (got ${base})`)
  const hex = Buffer.from(linkKey).toString("hex")
  return `${url.protocol}//wssk:${hex}@${url.host}${LINK_PATH_PREFIX}${meterId}`
}
