// Real parts for fault injection: a private Mosquitto we can stop and restart, a TCP proxy that
// makes PostgreSQL unreachable, and the bridge as a child process we can SIGKILL.
import { spawn, type ChildProcess } from "node:child_process"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { createServer, connect, type Server, type Socket } from "node:net"
import { tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { waitFor } from "./wait.js"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..")

/** The kernel's ephemeral range: port-0 listeners and outgoing connections take their ports here. */
function ephemeralRange(): [number, number] {
  try {
    const [lo, hi] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number)
    if (lo > 0 && hi >= lo) return [lo, hi]
  } catch {
    // not Linux: IANA's dynamic range
  }
  return [49152, 65535]
}

/**
 * A port free now, for a process that binds it later. It is drawn below the ephemeral range, where
 * no port-0 listener or outgoing connection lands in the meantime (seen: `npm start` spent its build
 * while a connection took the ephemeral port picked for it, "port … is already in use").
 */
export async function freePort(): Promise<number> {
  const [lo] = ephemeralRange()
  const floor = lo > 12_000 ? 10_000 : 1024
  const ceiling = lo > 12_000 ? lo - 1 : 65_535
  for (let tries = 0; tries < 50; tries++) {
    const port = floor + Math.floor(Math.random() * (ceiling - floor + 1))
    const s = createServer()
    const ok = await new Promise<boolean>((r) => {
      s.once("error", () => r(false))
      s.listen(port, "127.0.0.1", () => r(true))
    })
    if (!ok) continue
    await new Promise<void>((r) => s.close(() => r()))
    return port
  }
  throw new Error("no free port below the ephemeral range after 50 tries")
}

/** True when something accepts a TCP connection on the port. */
const listening = (port: number) =>
  new Promise<boolean>((r) => {
    const c = connect(port, "127.0.0.1", () => {
      c.destroy()
      r(true)
    })
    c.on("error", () => r(false))
  })

const waitPort = (port: number, timeoutMs = 10000) =>
  waitFor(`a listener on port ${port}`, () => listening(port), timeoutMs, 50)

/** Sends `signal` and waits for the process to exit (no-op when it is not running). */
async function endProcess(p: ChildProcess | undefined, signal: NodeJS.Signals) {
  if (!p || p.exitCode !== null || p.signalCode !== null) return
  await new Promise<void>((r) => {
    p.once("exit", () => r())
    p.kill(signal)
  })
}

/** Mosquitto with deploy/mosquitto/citymeter.conf, on a private port and persistence directory. */
export class MosquittoProcess {
  private proc?: ChildProcess
  readonly dir = mkdtempSync(join(tmpdir(), "cm-mosq-"))
  constructor(readonly port: number) {}
  get url() {
    return `mqtt://127.0.0.1:${this.port}`
  }
  static async create() {
    const m = new MosquittoProcess(await freePort())
    await m.start()
    return m
  }
  async start() {
    const conf = readFileSync(join(root, "deploy/mosquitto/citymeter.conf"), "utf8")
      .replace(/^listener .*$/m, `listener ${this.port} 127.0.0.1`)
      .replace(/^persistence_location .*$/m, `persistence_location ${this.dir}/`)
    const file = join(this.dir, "mosquitto.conf")
    writeFileSync(file, conf + "\nlog_dest none\n")
    this.proc = spawn("mosquitto", ["-c", file], { stdio: "ignore" })
    await waitPort(this.port)
  }
  /** Graceful stop (SIGTERM: Mosquitto saves its sessions). */
  async stop() {
    await endProcess(this.proc, "SIGTERM")
    this.proc = undefined
  }
}

/** A TCP proxy in front of a server; cut() drops every connection and refuses new ones. */
export class TcpProxy {
  private server?: Server
  private sockets = new Set<Socket>()
  private down = false
  constructor(
    readonly port: number,
    private readonly target: number,
  ) {}
  static async create(target: number) {
    const p = new TcpProxy(await freePort(), target)
    await p.listen()
    return p
  }
  private async listen() {
    this.server = createServer((client) => {
      if (this.down) return client.destroy()
      const upstream = connect(this.target, "127.0.0.1")
      for (const s of [client, upstream]) {
        this.sockets.add(s)
        s.on("close", () => this.sockets.delete(s))
        s.on("error", () => {})
      }
      client.pipe(upstream).pipe(client)
      client.on("close", () => upstream.destroy())
      upstream.on("close", () => client.destroy())
    })
    await new Promise<void>((r) => this.server!.listen(this.port, "127.0.0.1", () => r()))
  }
  cut() {
    this.down = true
    for (const s of this.sockets) s.destroy()
  }
  restore() {
    this.down = false
  }
  async close() {
    this.cut()
    await new Promise<void>((r) => this.server?.close(() => r()))
  }
}

/** The bridge service (bridge/src/main.ts) in its own process. */
/**
 * How a bridge process is started: from the sources through tsx (what tests run), or the compiled
 * dist/ (`npm run build`) with plain Node, as `npm run bridge` and the service run it.
 */
export const BRIDGE_ARGV = {
  tsx: ["--import", "tsx", join(root, "bridge/src/main.ts")],
  compiled: ["--enable-source-maps", join(root, "dist/bridge/src/main.js")],
}

export class BridgeProcess {
  private proc?: ChildProcess
  apiUrl?: string
  readonly output: string[] = []
  constructor(
    readonly env: Record<string, string>,
    readonly argv: readonly string[] = BRIDGE_ARGV.tsx,
  ) {}
  /** The bridge's process id while it runs (for /proc readings such as peak RSS). */
  get pid() {
    return this.proc?.pid
  }
  async start() {
    this.apiUrl = undefined
    const proc = spawn(process.execPath, [...this.argv], {
      cwd: root,
      env: { ...process.env, HTTP_PORT: "0", ...this.env },
      stdio: ["ignore", "pipe", "pipe"],
    })
    this.proc = proc
    const onData = (b: Buffer) => {
      for (const line of String(b).split("\n")) {
        if (!line.trim()) continue
        this.output.push(line)
        const m = /API (http:\/\/\S+)/.exec(line)
        if (m) this.apiUrl = m[1]
      }
    }
    proc.stdout!.on("data", onData)
    proc.stderr!.on("data", onData)
    await waitFor(
      "the bridge to start (its API line)",
      async () => {
        if (proc.exitCode !== null) throw new Error(`bridge exited: ${this.output.slice(-5).join("\n")}`)
        return this.apiUrl !== undefined
      },
      45000,
      50,
    )
  }
  /** Crash: no shutdown path runs. */
  async kill() {
    await endProcess(this.proc, "SIGKILL")
    this.proc = undefined
  }
  async stop() {
    await endProcess(this.proc, "SIGTERM")
    this.proc = undefined
  }
  async get<T>(path: string): Promise<T> {
    const res = await fetch(`${this.apiUrl}${path}`)
    if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`)
    return (await res.json()) as T
  }
}
