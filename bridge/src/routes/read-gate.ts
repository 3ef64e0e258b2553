// Expensive reads wait for a turn, so that a crowd of them cannot take the process's memory and the
// data tier's time from ingest. Each gate lets `concurrency` requests run and `queue` wait; one
// more is shed at once with 503 CM_ERR_BUSY and Retry-After, before any work is done. A turn is
// held until the answer has been sent or the client went away (an export's stream included).
import type { FastifyInstance, FastifyRequest } from "fastify"
import { errors } from "../errors.js"
import type { Metrics } from "../metrics.js"

export interface GateLimits {
  concurrency: number
  queue: number
}

export class Gate {
  private running = 0
  private readonly waiting: (() => void)[] = []

  constructor(
    readonly name: string,
    private readonly limits: GateLimits,
  ) {}

  /** Resolves with the function that gives the turn back; undefined when the queue is full. */
  enter(): Promise<() => void> | undefined {
    if (this.running < this.limits.concurrency) {
      this.running++
      return Promise.resolve(this.leaver())
    }
    if (this.waiting.length >= this.limits.queue) return undefined
    return new Promise((resolve) => this.waiting.push(() => resolve(this.leaver())))
  }

  private leaver() {
    let left = false
    return () => {
      if (left) return
      left = true
      const next = this.waiting.shift()
      if (next) next()
      else this.running--
    }
  }
}

/** The gate a GET takes, by its path; undefined: cheap, no gate. */
export type GateOf = (path: string) => Gate | undefined

/** Installs the gates on GET and HEAD requests; `gateOf` picks one by path. */
export function installReadGates(app: FastifyInstance, gateOf: GateOf, metrics: Metrics) {
  app.addHook("onRequest", async (req: FastifyRequest, reply) => {
    if (req.method !== "GET" && req.method !== "HEAD") return
    const gate = gateOf(req.url.split("?")[0])
    if (!gate) return
    const entered = gate.enter()
    if (!entered) {
      metrics.readsShed.inc({ gate: gate.name })
      throw errors.CM_ERR_BUSY(`too many ${gate.name} requests at once`)
    }
    const leave = await entered
    // 'close' comes once the answer is sent, and also when the client goes away first
    if (reply.raw.closed || req.raw.destroyed) leave()
    else reply.raw.once("close", leave)
  })
}

/** Which requests are expensive: open data over many rows (SensorThings, NGSI-LD, readings, export). */
export function readGates(limits: { reads: GateLimits; exports: GateLimits }): GateOf {
  const reads = new Gate("read", limits.reads)
  const exports = new Gate("export", limits.exports)
  const READS = [
    /^\/sta\/v1\.1\/./,
    /^\/ngsi-ld\/v1\/./,
    /^\/meters\/[^/]+\/(readings|consumption)$/,
    /^\/(consumption|districts|alarms|balances)$/,
    /^\/dmas\/[^/]+\/(balance|night-flow|apparent-losses|pressure)$/,
    /^\/readings\/latest$/,
  ]
  return (path) =>
    path.startsWith("/export/readings/") ? exports : READS.some((r) => r.test(path)) ? reads : undefined
}
