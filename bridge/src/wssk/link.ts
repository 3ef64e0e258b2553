// One meter's authenticated WSSK link (endpoint.ts opens it): commands and their answers, with
// timeouts, and what the rollout uses: hash(), deploy(), streamLogs(). One command at a time per
// link: the device answers in order and an answer names only its command, not the request.
import { createHash } from "node:crypto"
import type { Socket } from "node:net"
import {
  DEPLOY_ALIGN,
  DEPLOY_CHUNK,
  DEVICE_MAX_MESSAGE,
  STREAM_DMESG,
  WSSK,
  wsFrame,
  type WsskSession,
} from "./protocol.js"

/** What happened on a link, with performance.now() times (ms). */
export interface LinkTimes {
  /** The HTTP upgrade request arrived. */
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

/** Timeouts of the link's requests, ms. */
export const LINK_TIMEOUTS = { requestMs: 10_000, deployStartMs: 20_000 }
/** Device log lines a link keeps (the newest). */
export const DMESG_LINES = 200
const hex = (cmd: number) => `0x${cmd.toString(16)}`

/** Why the runtime would refuse an image (devsmgr_deploy_start), or undefined. */
export const imageError = (image: Uint8Array) =>
  !image.length || image.length % DEPLOY_ALIGN
    ? `an image is a non-empty multiple of ${DEPLOY_ALIGN} bytes (got ${image.length})`
    : undefined

export class WsskLink {
  readonly times: LinkTimes
  /** The newest DMESG_LINES lines of the device's log (after streamLogs or SetStreaming). */
  readonly dmesg: string[] = []
  closeReason = ""
  private dmesgTail = ""
  private waiter?: { cmd: number; resolve: (m: WsskMessage) => void }
  private readonly closeWaiters = new Set<() => void>()
  private readonly logListeners = new Set<(line: string) => void>()
  private queue: Promise<unknown> = Promise.resolve()
  /** @internal endpoint.ts opens links */
  constructor(
    readonly meterId: string,
    readonly path: string,
    private readonly sock: Socket,
    private readonly session: WsskSession,
    upgradeAt: number,
    private readonly onDeployed: (bytes: number) => void = () => {},
  ) {
    this.times = { upgrade: upgradeAt }
  }

  get open() {
    return this.times.closed === undefined
  }

  /** Sends one command without waiting; the encrypted message must fit the device's receive buffer. */
  send(cmd: number, payload: Buffer = Buffer.alloc(0)) {
    if (!this.open) throw new Error(`WSSK ${this.meterId}: link closed (${this.closeReason})`)
    const plain = Buffer.concat([Buffer.from([cmd]), payload])
    // 1 command byte + payload + 4-byte tag + a 2- or 4-byte frame header
    const wire = plain.length + 4 + (plain.length + 4 < 126 ? 2 : 4)
    if (wire > DEVICE_MAX_MESSAGE)
      throw new Error(`WSSK ${this.meterId}: a ${wire}-byte message is over the device's ${DEVICE_MAX_MESSAGE}`)
    this.sock.write(wsFrame(0x2, this.session.seal(plain)))
  }

  /**
   * Sends `cmd` and resolves with the device's answer (the same code, or 0xff); rejects when the
   * link closes first or after timeoutMs. Requests on one link run one after another.
   */
  request(cmd: number, payload?: Buffer, timeoutMs = LINK_TIMEOUTS.requestMs) {
    const run = () => this.requestNow(cmd, payload, timeoutMs)
    const p = this.queue.then(run, run)
    this.queue = p.catch(() => {})
    return p
  }

  private requestNow(cmd: number, payload: Buffer | undefined, timeoutMs: number) {
    if (!this.open) return Promise.reject(new Error(`WSSK ${this.meterId}: link closed (${this.closeReason})`))
    return new Promise<WsskMessage & { sentAt: number }>((resolve, reject) => {
      const sentAt = performance.now()
      const done = () => {
        clearTimeout(timer)
        if (this.waiter === waiter) this.waiter = undefined
        this.closeWaiters.delete(onClose)
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`WSSK ${this.meterId}: no answer to ${hex(cmd)} in ${timeoutMs} ms`))
      }, timeoutMs)
      const onClose = () => {
        done()
        reject(new Error(`WSSK ${this.meterId}: link closed before ${hex(cmd)} was answered (${this.closeReason})`))
      }
      const waiter = {
        cmd,
        resolve: (m: WsskMessage) => {
          done()
          resolve({ ...m, sentAt })
        },
      }
      this.waiter = waiter
      this.closeWaiters.add(onClose)
      try {
        this.send(cmd, payload)
      } catch (e) {
        done()
        reject(e as Error)
      }
    })
  }

  /** The SHA-256 of the program the meter runs (0x93), 32 bytes. */
  async hash(timeoutMs = LINK_TIMEOUTS.requestMs): Promise<Buffer> {
    const a = await this.request(WSSK.GetHash, undefined, timeoutMs)
    if (a.cmd !== WSSK.GetHash || a.payload.length !== 32)
      throw new Error(`WSSK ${this.meterId}: 0x93 answered ${hex(a.cmd)} with ${a.payload.length} bytes`)
    return Buffer.from(a.payload)
  }

  /**
   * Writes a program through the runtime's deploy path: 0x94 (size), 0x95 chunks of DEPLOY_CHUNK
   * bytes, 0x96; the runtime then restarts the program, and 0x93 must answer the image's SHA-256.
   * onProgress gets the bytes written so far. Rejects on a refusal (0xff), a timeout or a lost link.
   */
  async deploy(image: Uint8Array, onProgress?: (written: number, total: number) => void, timeoutMs = LINK_TIMEOUTS) {
    const bytes = Buffer.from(image)
    const bad = imageError(bytes)
    if (bad) throw new Error(`WSSK ${this.meterId}: ${bad}`)
    const expect = async (cmd: number, payload?: Buffer, ms = timeoutMs.requestMs) => {
      const a = await this.request(cmd, payload, ms)
      if (a.cmd !== cmd) throw new Error(`WSSK ${this.meterId}: the meter refused ${hex(cmd)} (answered ${hex(a.cmd)})`)
    }
    const size = Buffer.alloc(4)
    size.writeUInt32LE(bytes.length)
    await expect(WSSK.DeployStart, size, timeoutMs.deployStartMs) // the runtime stops the program first
    for (let off = 0; off < bytes.length; off += DEPLOY_CHUNK) {
      const chunk = bytes.subarray(off, off + DEPLOY_CHUNK)
      await expect(WSSK.DeployWrite, chunk)
      this.onDeployed(chunk.length)
      onProgress?.(off + chunk.length, bytes.length)
    }
    await expect(WSSK.DeployFinish)
    const want = createHash("sha256").update(bytes).digest()
    const got = await this.hash(timeoutMs.requestMs)
    if (!got.equals(want))
      throw new Error(
        `WSSK ${this.meterId}: after the deploy the meter's hash is ${got.toString("hex")}, not the image's`,
      )
    return { sha256: want.toString("hex"), bytes: bytes.length }
  }

  /**
   * Streams the device's log lines to `on` (0x90 with the DMESG mask). Resolves with a stop
   * function, which ends the stream (0x90 with no mask) once no listener is left.
   */
  async streamLogs(on: (line: string) => void): Promise<() => void> {
    this.logListeners.add(on)
    if (this.logListeners.size === 1) this.setStreaming(STREAM_DMESG)
    return () => {
      if (!this.logListeners.delete(on) || this.logListeners.size || !this.open) return
      this.setStreaming(0)
    }
  }

  /** Calls f once when the link closes (at once if it is closed); returns the function that cancels it. */
  onClose(f: () => void): () => void {
    if (!this.open) {
      f()
      return () => {}
    }
    const once = () => f()
    this.closeWaiters.add(once)
    return () => void this.closeWaiters.delete(once)
  }

  private setStreaming(mask: number) {
    const m = Buffer.alloc(2)
    m.writeUInt16LE(mask)
    this.send(WSSK.SetStreaming, m) // the device answers with nothing but the stream
  }

  /** @internal a device message after the auth */
  deliver(plain: Buffer) {
    const m: WsskMessage = { at: performance.now(), cmd: plain[0], payload: plain.subarray(1) }
    if (m.cmd === WSSK.PingCloud) return this.send(WSSK.PingCloud, m.payload) // the device's watchdog
    if (m.cmd === WSSK.Dmesg) return this.log(m.payload.toString("utf8"))
    const w = this.waiter
    if (w && (m.cmd === w.cmd || m.cmd === WSSK.Error)) w.resolve(m)
  }

  private log(text: string) {
    const lines = (this.dmesgTail + text).split("\n")
    this.dmesgTail = (lines.pop() ?? "").slice(-1024)
    for (const line of lines) {
      if (!line.length) continue
      this.dmesg.push(line)
      if (this.dmesg.length > DMESG_LINES) this.dmesg.shift()
      for (const f of this.logListeners) f(line)
    }
  }

  /** @internal the connection ended */
  ended(reason: string) {
    if (!this.open) return
    this.times.closed = performance.now()
    this.closeReason = reason
    for (const f of [...this.closeWaiters]) f()
    this.logListeners.clear()
  }

  close(reason = "closed by the endpoint") {
    this.ended(reason)
    this.sock.destroy()
  }
}
