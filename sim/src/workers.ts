// Simulated meters spread over worker threads: each thread hosts a share of the VMs
// (sim/src/workers-thread.ts), one event loop per core, and this thread only hands out meters,
// collects their console lines and stops them. One event loop for every VM and its Jacdac bus was
// the limit before: at 96 VMs intervals slipped while the process used a third of a core.
import { availableParallelism } from "node:os"
import { Worker } from "node:worker_threads"
import type { SimMeterOptions } from "./meter.js"

/** What a thread needs to build one SimMeter (structured-clonable: no callbacks). */
export type PoolMeter = Omit<SimMeterOptions, "log">

export interface SimPoolOptions {
  meters: PoolMeter[]
  /** Worker threads; default: one per core the process may use. */
  workers?: number
  /** Drive the sensors with the household demo load (sim/src/demo.ts); default true. */
  demo?: boolean
  /** Firmware console lines sent to this thread: those matching, or all. Default: FORWARD_LINES. */
  forward?: RegExp | "all"
  /** Called for every forwarded line. */
  onLine?: (meterId: string, line: string) => void
  /** Called as each meter's firmware is deployed and running. */
  onStarted?: (meterId: string, done: number, total: number) => void
  /** VMs a thread starts at a time. */
  startConcurrency?: number
}

/** The lines a pool forwards by default: frames, alarms, connections and errors. */
export const FORWARD_LINES = /citymeter: (frame|alarm|connected)|error/
const FRAME_LINE = "citymeter: frame "

/** Main thread → worker. */
export type ToThread = { t: "stop" } | { t: "stats" }
/** Worker → main thread. */
export type FromThread =
  | { t: "line"; id: string; line: string }
  | { t: "started"; id: string }
  | { t: "failed"; id: string; error: string }
  | { t: "stats"; meters: number; lagP50Ms: number; lagP99Ms: number; lagMaxMs: number }
  | { t: "stopped" }

/** workerData of a pool thread. */
export interface ThreadData {
  meters: PoolMeter[]
  demo: boolean
  /** RegExp source of the lines to forward; null forwards every line. */
  forward: string | null
  startConcurrency: number
}

export interface ThreadStats {
  meters: number
  /** Event-loop delay of the thread since the previous stats() (perf_hooks histogram). */
  lagP50Ms: number
  lagP99Ms: number
  lagMaxMs: number
}

// from the sources, a plain-JS entry registers tsx in the thread, then loads workers-thread.ts;
// compiled (dist/), the thread runs workers-thread.js itself
const ENTRY = new URL(import.meta.url.endsWith(".ts") ? "./workers-entry.mjs" : "./workers-thread.js", import.meta.url)

export class SimPool {
  /** "citymeter: frame" lines per meter: what the firmware says it made (the bridge's count is the truth). */
  readonly frames = new Map<string, number>()
  private readonly threads: Worker[] = []
  private readonly waiting = new Map<Worker, (m: FromThread) => void>()

  private constructor(readonly options: SimPoolOptions) {
    for (const m of options.meters) this.frames.set(m.meterId, 0)
  }

  get meterCount() {
    return this.options.meters.length
  }

  get workerCount() {
    return this.threads.length
  }

  /** Starts the threads and every meter in them; resolves once all run, rejects if one fails. */
  static async start(options: SimPoolOptions): Promise<SimPool> {
    const pool = new SimPool(options)
    try {
      await pool.launch()
    } catch (e) {
      await pool.stop()
      throw e
    }
    return pool
  }

  private async launch() {
    const o = this.options
    const n = Math.max(1, Math.min(o.workers ?? availableParallelism(), o.meters.length))
    const forward = o.forward ?? FORWARD_LINES
    const shares: PoolMeter[][] = Array.from({ length: n }, () => [])
    o.meters.forEach((m, i) => shares[i % n].push(m)) // round robin: even shares
    let done = 0
    await Promise.all(
      shares.map(
        (meters) =>
          new Promise<void>((resolve, reject) => {
            const data: ThreadData = {
              meters,
              demo: o.demo ?? true,
              forward: forward === "all" ? null : forward.source,
              startConcurrency: o.startConcurrency ?? 4,
            }
            // execArgv []: the entry registers tsx itself, also when this process runs without it
            const w = new Worker(ENTRY, { workerData: data, execArgv: [] })
            this.threads.push(w)
            let started = 0
            w.on("message", (m: FromThread) => {
              if (m.t === "line") {
                if (m.line.includes(FRAME_LINE)) this.frames.set(m.id, (this.frames.get(m.id) ?? 0) + 1)
                o.onLine?.(m.id, m.line)
              } else if (m.t === "started") {
                o.onStarted?.(m.id, ++done, o.meters.length)
                if (++started === meters.length) resolve()
              } else if (m.t === "failed") reject(new Error(`${m.id}: ${m.error}`))
              else this.waiting.get(w)?.(m)
            })
            w.on("error", reject)
            w.on("exit", (code) => reject(new Error(`simulator thread exited (code ${code}) before its meters ran`)))
          }),
      ),
    )
  }

  private ask(w: Worker, msg: ToThread, reply: FromThread["t"]): Promise<FromThread> {
    return new Promise((resolve) => {
      const done = (m: FromThread) => {
        if (m.t !== reply) return
        this.waiting.delete(w)
        resolve(m)
      }
      this.waiting.set(w, done)
      w.once("exit", () => done({ t: reply } as FromThread))
      w.postMessage(msg)
    })
  }

  /** Each thread's meter count and event-loop delay since the last call. */
  async stats(): Promise<ThreadStats[]> {
    const r = await Promise.all(this.threads.map((w) => this.ask(w, { t: "stats" }, "stats")))
    return r.map((m) => (m.t === "stats" ? m : { meters: 0, lagP50Ms: NaN, lagP99Ms: NaN, lagMaxMs: NaN }))
  }

  /** Powers every meter off (as SimMeter.stop) and ends the threads. */
  async stop() {
    await Promise.all(
      this.threads.map(async (w) => {
        await Promise.race([this.ask(w, { t: "stop" }, "stopped"), new Promise((r) => setTimeout(r, 10_000))])
        await w.terminate()
      }),
    )
    this.threads.length = 0
  }
}
