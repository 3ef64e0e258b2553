// A minimal WSSK endpoint: the cloud side of the DeviceScript runtime's native cloud link
// (runtime/devicescript/network/wssk.c and wssk_health.c, DeviceScript 2.16), for tests and spikes.
// Written from the protocol, not from a reference host:
//   - transport: a WebSocket (RFC 6455) the device opens to ws://host:port/<path>, offering the
//     subprotocol `devs-key-<32 hex>`: its 16 random bytes (wssk.c jd_wssk_new). The device never
//     checks Sec-WebSocket-Accept, but we answer it correctly. Device frames are masked; ours must
//     not be, must be binary, minimally length-encoded and at most 64 KB (websock_conn.c on_data);
//     a whole message must fit the device's 270-byte receive buffer (MAX_MESSAGE);
//   - handshake: we send a plain "hello" (u32 LE magic 0xcee428ca, u32 LE version 2, our 16 random
//     bytes); both sides derive the session key HKDF-SHA256(ikm = the device's 32-byte key, no salt,
//     info = device random ‖ our random); each side then sends an encrypted auth message of 32 zero
//     bytes; the device's link is up when ours decrypts (wssk.c on_hello, on_message);
//   - framing: each WebSocket message is AES-256-CCM(plain) ‖ 4-byte tag, with a 13-byte nonce
//     (2-byte length field) per direction: device→endpoint starts 01 00…, endpoint→device 02 00…,
//     each incremented big-endian after every message, auth included;
//   - commands: the first plain byte. 0x90 set streaming (u16 mask; 0x02 = DMESG), 0x91 ping the
//     device (echoed), 0x92 the device's ping (we echo it: that feeds its 32 s reconnect watchdog),
//     0x93 program SHA-256 (answered 0x93 ‖ 32 bytes), 0x94 deploy start (u32 size), 0x95 chunk,
//     0x96 finish (each answered with its own code, or 0xff on error), 0x9a DMESG text.
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from "node:crypto"
import { createServer, type IncomingMessage, type Server } from "node:http"
import type { AddressInfo, Socket } from "node:net"

export const WSSK = {
  SetStreaming: 0x90,
  PingDevice: 0x91,
  PingCloud: 0x92,
  GetHash: 0x93,
  DeployStart: 0x94,
  DeployWrite: 0x95,
  DeployFinish: 0x96,
  C2d: 0x97,
  D2c: 0x98,
  JacdacPacket: 0x99,
  Dmesg: 0x9a,
  ExceptionReport: 0x9b,
  Error: 0xff,
} as const
export const STREAM_DMESG = 0x02

const MAGIC = 0xcee428ca
const VERSION = 2
const KEY_BYTES = 32
const RANDOM_BYTES = 16
const TAG_BYTES = 4
const NONCE_BYTES = 13
/** websock_conn.c MAX_MESSAGE: the device's buffer for one message with its frame header. */
export const DEVICE_MAX_MESSAGE = 270

/** Big-endian increment of a CCM nonce, wrapping. */
function bump(nonce: Buffer) {
  for (let i = nonce.length - 1; i >= 0; i--) {
    nonce[i] = (nonce[i] + 1) & 0xff
    if (nonce[i] !== 0) return
  }
}

function seal(key: Buffer, nonce: Buffer, plain: Buffer): Buffer {
  const c = createCipheriv("aes-256-ccm", key, nonce, { authTagLength: TAG_BYTES })
  const body = Buffer.concat([c.update(plain), c.final()])
  return Buffer.concat([body, c.getAuthTag()])
}

/** The plain text, or undefined when the tag does not verify. */
function open(key: Buffer, nonce: Buffer, msg: Buffer): Buffer | undefined {
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

/** One unmasked, final, minimally length-encoded WebSocket frame. */
function frame(opcode: number, payload: Buffer): Buffer {
  const n = payload.length
  if (n >= 0x10000) throw new Error(`WSSK: a ${n}-byte frame is over the device's 64 KB limit`)
  const head = n < 126 ? Buffer.from([0x80 | opcode, n]) : Buffer.from([0x80 | opcode, 126, n >> 8, n & 0xff])
  return Buffer.concat([head, payload])
}

/** What happened on a link, with performance.now() times (ms). */
export interface LinkTimes {
  /** HTTP upgrade request received (the device's TCP connection is up and it sent its request). */
  upgrade: number
  /** The device's auth verified: the link is up on both sides. */
  auth?: number
  closed?: number
}

export interface WsskMessage {
  at: number
  cmd: number
  payload: Buffer
}

/** One device's authenticated link. */
export class WsskLink {
  readonly times: LinkTimes
  readonly received: WsskMessage[] = []
  readonly dmesg: string[] = []
  closeReason = ""
  private dmesgTail = ""
  private waiters: { cmds: number[]; resolve: (m: WsskMessage) => void }[] = []
  private closeWaiters: (() => void)[] = []
  /** @internal */
  constructor(
    readonly path: string,
    private readonly sock: Socket,
    private readonly key: Buffer,
    private readonly txNonce: Buffer,
    upgradeAt: number,
  ) {
    this.times = { upgrade: upgradeAt }
  }

  get open() {
    return this.times.closed === undefined
  }

  /** Sends one command; the encrypted message must fit the device's receive buffer. */
  send(cmd: number, payload: Buffer = Buffer.alloc(0)) {
    if (!this.open) throw new Error(`WSSK ${this.path}: link closed (${this.closeReason})`)
    this.sendPlain(Buffer.concat([Buffer.from([cmd]), payload]))
  }

  /** @internal */
  sendPlain(plain: Buffer) {
    const f = frame(0x2, seal(this.key, this.txNonce, plain))
    if (f.length > DEVICE_MAX_MESSAGE)
      throw new Error(`WSSK ${this.path}: a ${f.length}-byte message is over the device's ${DEVICE_MAX_MESSAGE}`)
    bump(this.txNonce)
    this.sock.write(f)
  }

  /**
   * Sends `cmd` and resolves with the device's next message answering it (the same code, or
   * 0xff); rejects when the link closes first or after timeoutMs.
   */
  request(cmd: number, payload?: Buffer, timeoutMs = 10000): Promise<WsskMessage & { sentAt: number }> {
    if (!this.open) return Promise.reject(new Error(`WSSK ${this.path}: link closed (${this.closeReason})`))
    return new Promise((resolve, reject) => {
      const sentAt = performance.now()
      const done = () => {
        clearTimeout(timer)
        this.waiters = this.waiters.filter((w) => w !== waiter)
        this.closeWaiters = this.closeWaiters.filter((f) => f !== onClose)
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`WSSK ${this.path}: no answer to 0x${cmd.toString(16)} in ${timeoutMs} ms`))
      }, timeoutMs)
      const onClose = () => {
        done()
        reject(new Error(`WSSK ${this.path}: link closed before 0x${cmd.toString(16)} was answered`))
      }
      const waiter = {
        cmds: [cmd, WSSK.Error],
        resolve: (m: WsskMessage) => {
          done()
          resolve({ ...m, sentAt })
        },
      }
      this.waiters.push(waiter)
      this.closeWaiters.push(onClose)
      try {
        this.send(cmd, payload)
      } catch (e) {
        done()
        reject(e as Error)
      }
    })
  }

  /** @internal */
  deliver(plain: Buffer) {
    const m: WsskMessage = { at: performance.now(), cmd: plain[0], payload: plain.subarray(1) }
    this.received.push(m)
    if (m.cmd === WSSK.PingCloud) this.send(WSSK.PingCloud, m.payload) // the device's watchdog
    if (m.cmd === WSSK.Dmesg) {
      const lines = (this.dmesgTail + m.payload.toString("utf8")).split("\n")
      this.dmesgTail = lines.pop() ?? ""
      this.dmesg.push(...lines.filter((l) => l.length))
    }
    this.waiters.find((w) => w.cmds.includes(m.cmd))?.resolve(m)
  }

  /** @internal */
  ended(reason: string) {
    if (!this.open) return
    this.times.closed = performance.now()
    this.closeReason = reason
    for (const f of [...this.closeWaiters]) f()
  }

  close() {
    this.sock.destroy()
    this.ended("closed by the endpoint")
  }
}

export interface WsskEndpointOptions {
  /** Each device's 32-byte key, by request path (`/wssk/<device>`). */
  keys: Map<string, Buffer>
  /** Called when a device's auth verified. */
  onLink?: (link: WsskLink) => void
}

/** Every upgrade attempt and why one failed: what a test asserts on when no link comes up. */
export interface WsskAttempt {
  at: number
  path: string
  protocol: string
  outcome: "linked" | string
}

export class WsskEndpoint {
  readonly links: WsskLink[] = []
  readonly attempts: WsskAttempt[] = []
  private readonly sockets = new Set<Socket>()
  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(opts: WsskEndpointOptions): Promise<WsskEndpoint> {
    const server = createServer((_req, res) => {
      res.writeHead(426, { "content-type": "text/plain" })
      res.end("WebSocket only\n")
    })
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()))
    const ep = new WsskEndpoint(server, (server.address() as AddressInfo).port)
    server.on("upgrade", (req: IncomingMessage, sock: Socket, head: Buffer) => ep.upgrade(opts, req, sock, head))
    return ep
  }

  /** The connection string the runtime parses (wssk_health.c set_conn_string). */
  connectionString(path: string, key: Buffer) {
    return `ws://wssk:${key.toString("hex")}@127.0.0.1:${this.port}${path}`
  }

  private upgrade(opts: WsskEndpointOptions, req: IncomingMessage, sock: Socket, head: Buffer) {
    const at = performance.now()
    const path = req.url ?? ""
    const protocol = String(req.headers["sec-websocket-protocol"] ?? "")
    const attempt: WsskAttempt = { at, path, protocol, outcome: "" }
    this.attempts.push(attempt)
    this.sockets.add(sock)
    sock.on("close", () => this.sockets.delete(sock))
    sock.on("error", () => {})
    const refuse = (why: string) => {
      attempt.outcome = why
      sock.end(`HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n`)
    }
    const key = opts.keys.get(path)
    if (!key) return refuse("unknown device path")
    const m = /^devs-key-([0-9a-f]{32})$/i.exec(protocol)
    if (!m) return refuse("no devs-key protocol")
    const wsKey = String(req.headers["sec-websocket-key"] ?? "")
    if (!wsKey) return refuse("no Sec-WebSocket-Key")
    const accept = createHash("sha1")
      .update(wsKey + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
      .digest("base64")
    sock.write(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: ${protocol}\r\n\r\n`,
    )

    const deviceRandom = Buffer.from(m[1], "hex")
    const ourRandom = randomBytes(RANDOM_BYTES)
    const session = Buffer.from(
      hkdfSync("sha256", key, Buffer.alloc(0), Buffer.concat([deviceRandom, ourRandom]), KEY_BYTES),
    )
    const rxNonce = Buffer.alloc(NONCE_BYTES)
    rxNonce[0] = 1
    const txNonce = Buffer.alloc(NONCE_BYTES)
    txNonce[0] = 2
    const link = new WsskLink(path, sock, session, txNonce, at)
    let authed = false

    const hello = Buffer.alloc(8 + RANDOM_BYTES)
    hello.writeUInt32LE(MAGIC, 0)
    hello.writeUInt32LE(VERSION, 4)
    ourRandom.copy(hello, 8)
    sock.write(frame(0x2, hello))
    link.sendPlain(Buffer.alloc(KEY_BYTES)) // our auth: 32 zero bytes, encrypted

    const fail = (why: string) => {
      if (!authed) attempt.outcome = why
      link.ended(why)
      sock.destroy()
    }
    const onMessage = (msg: Buffer) => {
      const plain = open(session, rxNonce, msg)
      bump(rxNonce)
      if (!plain) return fail(authed ? "tag error" : "auth tag error (wrong key?)")
      if (!authed) {
        if (plain.length < KEY_BYTES || plain.some((b) => b !== 0)) return fail("bad auth")
        authed = true
        attempt.outcome = "linked"
        link.times.auth = performance.now()
        this.links.push(link)
        opts.onLink?.(link)
        return
      }
      if (!plain.length) return fail("empty message")
      link.deliver(plain)
    }

    // RFC 6455 frames from the device: masked; binary messages, maybe in continuation frames
    let buf = head
    let parts: Buffer[] = []
    const onData = (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk
      for (;;) {
        if (buf.length < 2) return
        const fin = (buf[0] & 0x80) !== 0
        const opcode = buf[0] & 0x0f
        const masked = (buf[1] & 0x80) !== 0
        let len = buf[1] & 0x7f
        let at = 2
        if (len === 126) {
          if (buf.length < 4) return
          len = buf.readUInt16BE(2)
          at = 4
        } else if (len === 127) {
          if (buf.length < 10) return
          len = Number(buf.readBigUInt64BE(2))
          at = 10
        }
        if (!masked) return fail("unmasked device frame")
        if (buf.length < at + 4 + len) return
        const mask = buf.subarray(at, at + 4)
        const data = Buffer.from(buf.subarray(at + 4, at + 4 + len))
        for (let i = 0; i < data.length; i++) data[i] ^= mask[i & 3]
        buf = buf.subarray(at + 4 + len)
        if (opcode === 0x8) {
          const code = data.length >= 2 ? data.readUInt16BE(0) : 1005
          sock.end(frame(0x8, data.subarray(0, 2)))
          return fail(`close frame ${code}`)
        }
        if (opcode === 0x9) {
          sock.write(frame(0xa, data))
          continue
        }
        if (opcode === 0xa) continue
        if (opcode !== 0x0 && opcode !== 0x2) return fail(`opcode ${opcode}`)
        parts.push(data)
        if (fin) {
          const whole = Buffer.concat(parts)
          parts = []
          onMessage(whole)
        }
      }
    }
    sock.on("data", onData)
    // the device ends its side with a FIN (the simulator's sockClose, a board's close()); the HTTP
    // server's sockets are half-open by default, so end ours too
    sock.on("end", () => {
      if (!authed && !attempt.outcome) attempt.outcome = "ended before auth"
      link.ended("the device closed the connection")
      sock.end()
    })
    sock.on("close", () => {
      if (!authed && !attempt.outcome) attempt.outcome = "closed before auth"
      link.ended("TCP connection closed")
    })
    if (head.length) onData(Buffer.alloc(0))
  }

  /** Resolves with the next link that authenticates (or one that already did after `since`). */
  async nextLink(since = 0, timeoutMs = 20000): Promise<WsskLink> {
    const t0 = performance.now()
    for (;;) {
      const l = this.links.find((x) => x.times.auth! >= since)
      if (l) return l
      if (performance.now() - t0 > timeoutMs) {
        const seen = this.attempts.map((a) => `${a.path} ${a.outcome}`).join("; ") || "no upgrade request"
        throw new Error(`WSSK: no link in ${timeoutMs} ms (${seen})`)
      }
      await new Promise((r) => setTimeout(r, 20))
    }
  }

  async close() {
    for (const s of this.sockets) s.destroy()
    for (const l of this.links) l.ended("endpoint closed")
    await new Promise<void>((r) => this.server.close(() => r()))
  }
}
