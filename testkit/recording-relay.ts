// A TCP relay that records what passes each way and can inject bytes into either direction, for
// replay and forgery tests: a client connects to the relay's port, the relay connects to the target.
// It forwards whole units only (a framing per direction, e.g. webSocketUnits: an HTTP head, then
// WebSocket frames), so what a test injects lands between units, never inside one. Half-closes pass
// through: which side ended first, and when, is recorded.
import { createServer, connect, type Server, type Socket } from "node:net"
import { freePort } from "./infra.js"

/** "up": client → target; "down": target → client. */
export type Direction = "up" | "down"

/**
 * A framing: given the bytes not yet forwarded (at least one), the length of the first whole unit
 * in them, or 0 when it is incomplete. Made per connection and direction (it may keep state).
 */
export type Framing = () => (pending: Buffer) => number

/** No framing: every chunk read is a unit. */
export const chunks: Framing = () => (pending) => pending.length

/**
 * HTTP then WebSocket (RFC 6455): the head up to its blank line is one unit, then each frame,
 * masked or not, is one unit.
 */
export const webSocketUnits: Framing = () => {
  let head = true
  return (b) => {
    if (head) {
      const end = b.indexOf("\r\n\r\n")
      if (end < 0) return 0
      head = false
      return end + 4
    }
    return wsFrameLength(b)
  }
}

/** The length of the WebSocket frame at the start of `b`, header and mask included; 0 if incomplete. */
export function wsFrameLength(b: Buffer): number {
  if (b.length < 2) return 0
  let len = b[1] & 0x7f
  let at = 2
  if (len === 126) {
    if (b.length < 4) return 0
    len = b.readUInt16BE(2)
    at = 4
  } else if (len === 127) {
    if (b.length < 10) return 0
    len = Number(b.readBigUInt64BE(2))
    at = 10
  }
  if (b[1] & 0x80) at += 4
  return b.length >= at + len ? at + len : 0
}

/** One WebSocket frame: opcode, fin, the payload unmasked. */
export function parseWsFrame(frame: Buffer): { fin: boolean; opcode: number; payload: Buffer } {
  let len = frame[1] & 0x7f
  let at = 2
  if (len === 126) [len, at] = [frame.readUInt16BE(2), 4]
  else if (len === 127) [len, at] = [Number(frame.readBigUInt64BE(2)), 10]
  const masked = (frame[1] & 0x80) !== 0
  const mask = masked ? frame.subarray(at, at + 4) : undefined
  if (masked) at += 4
  const payload = Buffer.from(frame.subarray(at, at + len))
  if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3]
  return { fin: (frame[0] & 0x80) !== 0, opcode: frame[0] & 0x0f, payload }
}

export interface RelayUnit {
  /** Its place among all units of its connection, both directions. */
  seq: number
  dir: Direction
  /** performance.now() when it was forwarded (or injected). */
  at: number
  bytes: Buffer
  /** Written by inject(), not read from the other side. */
  injected: boolean
}

export class RelayConnection {
  readonly units: RelayUnit[] = []
  /** When each side ended its half (FIN) or the socket closed: performance.now(). */
  readonly ended: { client?: number; target?: number } = {}
  /** Which side ended first: the client ("up" side), the target, or undefined while both are open. */
  firstEnded?: "client" | "target"
  closedAt?: number
  private readonly listeners = new Set<(u: RelayUnit) => void>()
  /** @internal the relay makes connections */
  constructor(
    readonly id: number,
    readonly openedAt: number,
    private readonly client: Socket,
    private readonly target: Socket,
  ) {}

  get open() {
    return this.closedAt === undefined
  }

  /** The units one way, in order. */
  of(dir: Direction) {
    return this.units.filter((u) => u.dir === dir)
  }

  /** Writes `bytes` into the stream `dir` as they are (down: to the client), between whole units. */
  inject(dir: Direction, bytes: Buffer) {
    const to = dir === "up" ? this.target : this.client
    if (to.destroyed || to.writableEnded) throw new Error(`relay connection ${this.id}: the ${dir} side is closed`)
    this.record(dir, Buffer.from(bytes), true)
    to.write(bytes)
  }

  /** Calls f with every unit from now on; returns the function that stops it. */
  onUnit(f: (u: RelayUnit) => void) {
    this.listeners.add(f)
    return () => void this.listeners.delete(f)
  }

  /** @internal */
  record(dir: Direction, bytes: Buffer, injected: boolean) {
    const u: RelayUnit = { seq: this.units.length, dir, at: performance.now(), bytes, injected }
    this.units.push(u)
    for (const f of this.listeners) f(u)
  }

  /** @internal */
  end(side: "client" | "target") {
    if (this.ended[side] === undefined) this.ended[side] = performance.now()
    this.firstEnded ??= side
  }

  destroy() {
    this.client.destroy()
    this.target.destroy()
  }
}

export interface RecordingRelayOptions {
  /** Where units end, per direction (default: chunks, as read). */
  framing?: Framing
  host?: string
}

/** A recording relay in front of 127.0.0.1:`target`, on a free port of its own. */
export class RecordingRelay {
  readonly connections: RelayConnection[] = []
  private server?: Server
  private constructor(
    readonly port: number,
    private readonly target: number,
    private readonly o: RecordingRelayOptions,
  ) {}

  static async create(target: number, o: RecordingRelayOptions = {}) {
    const r = new RecordingRelay(await freePort(), target, o)
    await r.listen()
    return r
  }

  get host() {
    return this.o.host ?? "127.0.0.1"
  }

  /** The newest connection, if any. */
  get latest(): RelayConnection | undefined {
    return this.connections.at(-1)
  }

  private async listen() {
    this.server = createServer({ allowHalfOpen: true }, (client) => {
      const target = connect({ port: this.target, host: "127.0.0.1", allowHalfOpen: true })
      const c = new RelayConnection(this.connections.length, performance.now(), client, target)
      this.connections.push(c)
      const framing = this.o.framing ?? chunks
      const pipe = (from: Socket, to: Socket, dir: Direction, side: "client" | "target") => {
        const unitLength = framing()
        let pending: Buffer = Buffer.alloc(0)
        from.on("data", (chunk: Buffer) => {
          pending = pending.length ? Buffer.concat([pending, chunk]) : chunk
          for (;;) {
            const n = pending.length ? unitLength(pending) : 0
            if (!n) break
            const unit = Buffer.from(pending.subarray(0, n))
            pending = pending.subarray(n)
            c.record(dir, unit, false)
            if (!to.destroyed && !to.writableEnded) to.write(unit)
          }
        })
        from.on("end", () => {
          c.end(side)
          if (pending.length) c.record(dir, Buffer.from(pending), false) // an incomplete unit at the end
          if (!to.destroyed) to.end()
        })
        from.on("error", () => {})
        from.on("close", () => {
          c.end(side)
          c.closedAt ??= performance.now()
          to.destroy()
        })
      }
      // data the client sends before the target connects is buffered by the target socket
      pipe(client, target, "up", "client")
      pipe(target, client, "down", "target")
    })
    await new Promise<void>((r) => this.server!.listen(this.port, this.host, () => r()))
  }

  async close() {
    for (const c of this.connections) c.destroy()
    await new Promise<void>((r) => this.server?.close(() => r()))
  }
}
