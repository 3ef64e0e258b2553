// The bridge's WSSK endpoint: meters' runtimes open their own cloud link here (docs/ota-spike.md)
// at /wssk/<meter id>, keyed by the link key the registry holds for that meter. A listener of its
// own (WSSK_PORT), apart from the HTTP API and its caps. Both sides prove the key (protocol.ts);
// a meter that does not is refused, counted (citymeter_wssk_auth_failures_total{reason}) and
// logged without key material. Bounds: message sizes, the handshake's time, one link per meter
// (a newer authenticated link replaces the older: the device has one socket), links in all.
import { createServer, type IncomingMessage, type Server } from "node:http"
import type { AddressInfo, Socket } from "node:net"
import type { Logger } from "pino"
import { SampledLog } from "../sampled-log.js"
import { isMeterId } from "../topics.js"
import { WsskLink, imageError } from "./link.js"
import { WsReader, WsskSession, deviceRandomOf, isAuth, meterIdOfPath, wsAccept, wsFrame } from "./protocol.js"

/** Why a link was refused: the label of citymeter_wssk_auth_failures_total. */
export type RefusalReason =
  | "unknown_meter" // no such meter in the registry, or no meter id in the path
  | "no_key" // the meter has no link key
  | "bad_auth" // its auth did not open under the key (wrong key), or was not the auth
  | "closed" // the device left before its auth (a device with another key cannot open ours)
  | "timeout" // no auth within the handshake time
  | "protocol" // not a WSSK upgrade, or a frame the link does not use
  | "busy" // past the endpoint's link limit, or a handshake of the meter is under way

/** The registry's answer for a meter: undefined when unknown, null when it has no link key. */
export type LinkKeyLookup = (meterId: string) => Promise<Uint8Array | null | undefined>

export interface WsskEndpointOptions {
  linkKey: LinkKeyLookup
  /** Listener; port 0 picks a free one. */
  port: number
  host: string
  /** Links and handshakes at once, in all. */
  maxLinks: number
  /** From the upgrade request to the device's auth, ms. */
  handshakeMs: number
  /** A link with no message from the device this long is closed (the device pings every 16 s), ms. */
  idleMs?: number
  log?: Logger
  /** Refusals are logged per reason: the first of each such interval, then its count (ms). */
  logIntervalMs?: number
  metrics?: WsskMetrics
  /** Every attempt's outcome, for tests: "linked" or a refusal. */
  onAttempt?: (a: WsskAttempt) => void
  onLink?: (link: WsskLink) => void
}

export interface WsskMetrics {
  linkUp(delta: 1 | -1): void
  authFailure(reason: RefusalReason): void
  deployed(bytes: number): void
}

export interface WsskAttempt {
  at: number
  path: string
  meterId?: string
  outcome: "linked" | RefusalReason
  /** What went wrong, for logs and tests: never key material. */
  detail?: string
}

export class WsskEndpoint {
  private readonly links = new Map<string, WsskLink>()
  private readonly handshakes = new Set<string>()
  private readonly linkWaiters = new Map<string, Set<(l: WsskLink) => void>>()
  private readonly sockets = new Set<Socket>()
  /** A device retries about twice a second: per reason, a sample and a count per interval. */
  private readonly refusals?: SampledLog
  private constructor(
    private readonly server: Server,
    private readonly o: WsskEndpointOptions,
    readonly port: number,
  ) {
    if (o.log) this.refusals = new SampledLog(o.log, "WSSK link refused", o.logIntervalMs ?? 10_000)
  }

  static async start(o: WsskEndpointOptions): Promise<WsskEndpoint> {
    const server = createServer({ maxHeaderSize: 4096 }, (_req, res) => {
      res.writeHead(426, { "content-type": "text/plain", connection: "close" })
      res.end("WSSK: WebSocket only\n")
    })
    server.headersTimeout = o.handshakeMs
    server.requestTimeout = o.handshakeMs
    server.maxConnections = o.maxLinks + 16 // past it Node closes new connections at once
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject)
      server.listen(o.port, o.host, () => resolve())
    })
    const ep = new WsskEndpoint(server, o, (server.address() as AddressInfo).port)
    server.on("upgrade", (req: IncomingMessage, sock: Socket, head: Buffer) => void ep.upgrade(req, sock, head))
    return ep
  }

  /** ws://host:port of the listener (host as configured). */
  get url() {
    const h = this.o.host.includes(":") ? `[${this.o.host}]` : this.o.host
    return `ws://${h}:${this.port}`
  }

  /** Whether the meter's link is up. */
  isUp(meterId: string) {
    return this.links.get(meterId)?.open ?? false
  }

  /** The meter's link, if up. */
  link(meterId: string): WsskLink | undefined {
    const l = this.links.get(meterId)
    return l?.open ? l : undefined
  }

  /** The meter's link once it is up (at once if it is), or undefined after timeoutMs. */
  waitLink(meterId: string, timeoutMs: number): Promise<WsskLink | undefined> {
    const up = this.link(meterId)
    if (up) return Promise.resolve(up)
    return new Promise((resolve) => {
      const waiters = this.linkWaiters.get(meterId) ?? new Set()
      this.linkWaiters.set(meterId, waiters)
      const done = (l: WsskLink | undefined) => {
        clearTimeout(timer)
        waiters.delete(done)
        if (!waiters.size) this.linkWaiters.delete(meterId)
        resolve(l)
      }
      const timer = setTimeout(() => done(undefined), timeoutMs)
      waiters.add(done)
    })
  }

  /** Meters with a link up. */
  linkedMeters() {
    return [...this.links.keys()]
  }

  private linkOf(meterId: string) {
    const l = this.link(meterId)
    if (!l) throw new Error(`WSSK: meter ${meterId} has no link up`)
    return l
  }

  /** The SHA-256 of the program the meter runs (0x93). */
  async hash(meterId: string, timeoutMs?: number) {
    return this.linkOf(meterId).hash(timeoutMs)
  }

  /** Writes a program to the meter (WsskLink.deploy): 0x94, 0x95 × n, 0x96, then 0x93 must match. */
  async deploy(meterId: string, image: Uint8Array, onProgress?: (written: number, total: number) => void) {
    const bad = imageError(image)
    if (bad) throw new Error(`WSSK ${meterId}: ${bad}`)
    return this.linkOf(meterId).deploy(image, onProgress)
  }

  /** Streams the meter's log lines (0x90 DMESG); resolves with the stop function. */
  async streamLogs(meterId: string, on: (line: string) => void) {
    return this.linkOf(meterId).streamLogs(on)
  }

  private async upgrade(req: IncomingMessage, sock: Socket, head: Buffer) {
    const at = performance.now()
    const path = req.url ?? ""
    const attempt: WsskAttempt = { at, path, outcome: "protocol" }
    this.sockets.add(sock)
    sock.on("close", () => this.sockets.delete(sock))
    sock.on("error", () => {})
    let settled = false
    const refuse = (reason: RefusalReason, detail: string, status?: string) => {
      if (settled) return
      settled = true
      attempt.outcome = reason
      attempt.detail = detail
      this.o.metrics?.authFailure(reason)
      this.refusals?.note(reason, "warn", () => ({ meterId: attempt.meterId, detail, remote: sock.remoteAddress }))
      this.o.onAttempt?.(attempt)
      if (status) sock.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`, () => sock.destroy())
      else sock.destroy()
    }
    const id = meterIdOfPath(path)
    if (id === undefined || !isMeterId(id)) return refuse("unknown_meter", "no meter id in the path", "404 Not Found")
    attempt.meterId = id
    if (this.sockets.size > this.o.maxLinks) return refuse("busy", "link limit", "503 Service Unavailable")
    if (this.handshakes.has(id)) return refuse("busy", "a handshake is under way", "503 Service Unavailable")
    const deviceRandom = deviceRandomOf(String(req.headers["sec-websocket-protocol"] ?? ""))
    const wsKey = String(req.headers["sec-websocket-key"] ?? "")
    if (!deviceRandom || !wsKey) return refuse("protocol", "not a WSSK upgrade", "400 Bad Request")
    this.handshakes.add(id)
    const timer = setTimeout(() => refuse("timeout", `no auth in ${this.o.handshakeMs} ms`), this.o.handshakeMs)
    const handshakeDone = () => {
      clearTimeout(timer)
      this.handshakes.delete(id)
    }
    sock.once("close", handshakeDone)
    let key: Uint8Array | null | undefined
    try {
      key = await this.o.linkKey(id)
    } catch (e) {
      handshakeDone()
      this.o.log?.error({ meterId: id, err: (e as Error).message }, "WSSK: the registry did not answer")
      return refuse("busy", "registry unavailable", "503 Service Unavailable")
    }
    if (settled) return handshakeDone()
    if (sock.destroyed) return refuse("closed", "closed before the hello")
    if (key === undefined) return refuse("unknown_meter", "not in the registry", "404 Not Found")
    if (key === null) return refuse("no_key", "the meter has no link key", "403 Forbidden")

    const session = new WsskSession(key, deviceRandom)
    const protocol = `devs-key-${deviceRandom.toString("hex")}`
    sock.write(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${wsAccept(wsKey)}\r\nSec-WebSocket-Protocol: ${protocol}\r\n\r\n`,
    )
    for (const m of session.opening()) sock.write(wsFrame(0x2, m))
    const link = new WsskLink(id, path, sock, session, at, (n) => this.o.metrics?.deployed(n))
    let authed = false
    const fail = (reason: RefusalReason, detail: string) => {
      if (!authed) return refuse(reason, detail)
      link.close(detail)
    }
    const onMessage = (msg: Buffer) => {
      const plain = session.open(msg)
      if (!plain) return fail("bad_auth", authed ? "tag error" : "the auth did not open under the meter's key")
      if (!authed) {
        if (!isAuth(plain)) return fail("bad_auth", "the first message was not the auth")
        authed = settled = true
        handshakeDone()
        link.times.auth = performance.now()
        attempt.outcome = "linked"
        this.admit(link)
        this.o.onAttempt?.(attempt)
        return
      }
      if (!plain.length) return fail("protocol", "empty message")
      link.deliver(plain)
    }
    const reader = new WsReader()
    const onData = (chunk: Buffer) => {
      for (const ev of reader.push(chunk)) {
        if (ev.kind === "message") onMessage(ev.data)
        else if (ev.kind === "ping") sock.write(wsFrame(0xa, ev.data.subarray(0, 125)))
        else if (ev.kind === "close") {
          sock.end(wsFrame(0x8, Buffer.from([ev.code >> 8, ev.code & 0xff])))
          return fail("closed", `close frame ${ev.code}`)
        } else return fail("protocol", ev.why)
        if (sock.destroyed) return
      }
    }
    sock.on("data", onData)
    sock.setTimeout(this.o.idleMs ?? 40_000, () => fail("timeout", "idle"))
    // the device ends its side with a FIN; the server's sockets are half-open by default
    sock.on("end", () => {
      fail("closed", "the device closed the connection")
      sock.end()
    })
    sock.on("close", () => {
      if (!authed) refuse("closed", "closed before the auth")
      link.ended(link.closeReason || "TCP connection closed")
      this.dropLink(link)
    })
    if (head.length) onData(head)
  }

  /** The meter's one link: an older one is closed (its device has one socket, so it is stale). */
  private admit(link: WsskLink) {
    const old = this.links.get(link.meterId)
    if (old && old !== link) old.close("replaced by a newer link of the meter")
    this.dropLink(old)
    this.links.set(link.meterId, link)
    this.o.metrics?.linkUp(1)
    this.o.log?.info({ meterId: link.meterId, ms: Math.round(link.times.auth! - link.times.upgrade) }, "WSSK link up")
    this.o.onLink?.(link)
    for (const f of [...(this.linkWaiters.get(link.meterId) ?? [])]) f(link)
  }

  private dropLink(link: WsskLink | undefined) {
    if (!link || this.links.get(link.meterId) !== link) return
    this.links.delete(link.meterId)
    this.o.metrics?.linkUp(-1)
    this.o.log?.info({ meterId: link.meterId, reason: link.closeReason }, "WSSK link down")
  }

  async close() {
    this.refusals?.flush()
    for (const l of this.links.values()) l.close("endpoint closed")
    for (const s of this.sockets) s.destroy()
    await new Promise<void>((r) => this.server.close(() => r()))
  }
}
