// Optional push of meters' newest state to an NGSI-LD context broker (NGSI_LD_URL; off by default).
// It listens to what ingest committed (live.ts, published after each batch's commit) and keeps one
// pending reading per meter, the newest; every flushMs it upserts up to batchSize of them as
// Smart Data Models entities (fiware.ts) with POST /ngsi-ld/v1/entityOperations/upsert?options=update
// (ETSI GS CIM 009, 5.6.8: attributes are updated, others the broker holds are kept).
// It never holds ingest back: it is called after the commit, only copies a reference into a
// bounded map, and sends from its own timer. A full map drops the meter waiting longest (counted).
// A failed request (network, timeout, 5xx, 429) puts its meters back unless a newer reading came
// meanwhile and waits longer before the next try (up to maxBackoffMs); a refusal (other 4xx) and
// the entities a 207 lists as failed are dropped. Every outcome is counted and logged, none throws.
import type { Logger } from "pino"
import { Counter, Gauge } from "prom-client"
import { BRIDGE_DEFAULTS } from "./defaults.js"
import { contextOf, entitiesOf, type NgsiEntity } from "./fiware.js"
import type { LiveBus, LiveEvent } from "./live.js"
import type { Metrics } from "./metrics.js"
import type { MeterLocation, ReadingRow, Store } from "./store/store.js"

export interface ForwarderConfig {
  /** The broker's base URL (http://orion:1026): the upsert goes to <url>/ngsi-ld/v1/entityOperations/upsert. */
  url: string
  /** NGSILD-Tenant header, when the broker is multi-tenant. */
  tenant?: string
  /** Most entities per request. */
  batchSize?: number
  /** How often pending meters are sent, ms. */
  flushMs?: number
  /** Most meters waiting; beyond it the one waiting longest is dropped. */
  maxPending?: number
  /** A request's time limit, ms. */
  timeoutMs?: number
  /** The longest wait after failures before the next try, ms. */
  maxBackoffMs?: number
}

export interface ForwarderOptions extends ForwarderConfig {
  store: Store
  metrics: Metrics
  log: Logger
  live: LiveBus
}

export interface Forwarder {
  /** Meters waiting to be sent. */
  readonly pending: number
  /** Sends what is pending now (tests; the timer does it otherwise). */
  flush(): Promise<void>
  stop(): Promise<void>
}

const RETRYABLE = (status: number) => status >= 500 || status === 429 || status === 408

export function startForwarder(o: ForwarderOptions): Forwarder {
  const D = BRIDGE_DEFAULTS.ngsiLd
  const batchSize = o.batchSize ?? D.batchSize
  const flushMs = o.flushMs ?? D.flushMs
  const maxPending = o.maxPending ?? D.maxPending
  const timeoutMs = o.timeoutMs ?? D.timeoutMs
  const maxBackoffMs = o.maxBackoffMs ?? D.maxBackoffMs
  const endpoint = `${o.url.replace(/\/+$/, "")}/ngsi-ld/v1/entityOperations/upsert?options=update`
  const registers = [o.metrics.registry]
  const entities = new Counter({
    name: "citymeter_ngsi_entities_total",
    help: "NGSI-LD entity upserts by outcome: sent (the broker took it), failed (the broker refused it), dropped (the pending queue was full)",
    labelNames: ["outcome"],
    registers,
  })
  const requests = new Counter({
    name: "citymeter_ngsi_requests_total",
    help: "NGSI-LD upsert requests by outcome: ok, partial (207), refused (4xx), failed (network, timeout, 5xx)",
    labelNames: ["outcome"],
    registers,
  })
  const pendingMeters = new Map<string, ReadingRow>()
  new Gauge({
    name: "citymeter_ngsi_pending",
    help: "Meters whose newest state waits to be sent to the NGSI-LD broker",
    registers,
    collect() {
      this.set(pendingMeters.size)
    },
  })
  // locations by meter, read once and followed through live meter events
  const locations = new Map<string, MeterLocation | null>()

  let failures = 0
  let nextTry = 0
  let inFlight: Promise<void> | undefined
  let stopped = false

  const enqueue = (r: ReadingRow) => {
    const had = pendingMeters.get(r.meterId)
    if (had && had.ts > r.ts) return // a backfilled older reading: the newer one stays
    pendingMeters.delete(r.meterId)
    pendingMeters.set(r.meterId, r)
    if (pendingMeters.size > maxPending) {
      const oldest = pendingMeters.keys().next().value as string
      pendingMeters.delete(oldest)
      entities.inc({ outcome: "dropped" })
      o.log.warn({ meterId: oldest, maxPending }, "NGSI-LD forwarder queue full: the meter waiting longest dropped")
    }
  }

  const onEvents = (events: LiveEvent[]) => {
    try {
      for (const e of events) {
        if (e.kind === "reading") enqueue(e.reading)
        else if (e.kind === "meter" && e.meter.location !== undefined) locations.set(e.meter.meterId, e.meter.location)
      }
    } catch (err) {
      o.log.error({ err }, "NGSI-LD forwarder: an event was not queued")
    }
  }
  const unsubscribe = o.live.subscribe(onEvents)

  async function locationOf(meterId: string) {
    if (locations.has(meterId)) return locations.get(meterId)!
    const m = await o.store.getMeter(meterId)
    const loc = m?.location ?? null
    locations.set(meterId, loc)
    return loc
  }

  async function send(batch: ReadingRow[]) {
    const body: (NgsiEntity & { "@context": string[] })[] = []
    for (const r of batch) {
      const location = await locationOf(r.meterId)
      for (const e of entitiesOf({ meterId: r.meterId, meter: { location }, reading: r }))
        body.push({ ...e, "@context": contextOf(e.type) })
    }
    if (!body.length) return
    const requeue = () => {
      for (const r of batch) if (!pendingMeters.has(r.meterId)) enqueue(r)
    }
    let res: Response
    try {
      res = await fetch(endpoint, {
        method: "POST",
        headers: { "content-type": "application/ld+json", ...(o.tenant ? { "ngsild-tenant": o.tenant } : {}) },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      })
    } catch (err) {
      requests.inc({ outcome: "failed" })
      requeue()
      throw new ForwardError(`${(err as Error).message}`, true)
    }
    const text = await res.text().catch(() => "")
    if (res.status === 201 || res.status === 204 || res.status === 200) {
      requests.inc({ outcome: "ok" })
      entities.inc({ outcome: "sent" }, body.length)
      return
    }
    if (res.status === 207) {
      // Batch Operation Result: { success: [ids], errors: [{ entityId, error }] }
      requests.inc({ outcome: "partial" })
      let failed: { entityId?: string; error?: unknown }[] = []
      try {
        failed = (JSON.parse(text) as { errors?: typeof failed }).errors ?? []
      } catch {
        failed = body.map((e) => ({ entityId: e.id }))
      }
      entities.inc({ outcome: "failed" }, failed.length)
      entities.inc({ outcome: "sent" }, Math.max(0, body.length - failed.length))
      o.log.warn({ failed: failed.slice(0, 5), count: failed.length }, "NGSI-LD broker refused some entities")
      return
    }
    if (RETRYABLE(res.status)) {
      requests.inc({ outcome: "failed" })
      requeue()
      throw new ForwardError(`HTTP ${res.status} ${text.slice(0, 200)}`, true)
    }
    requests.inc({ outcome: "refused" })
    entities.inc({ outcome: "failed" }, body.length)
    throw new ForwardError(`HTTP ${res.status} ${text.slice(0, 200)}`, false)
  }

  /** Sends batches while meters are pending, until a failure sets the next try later. */
  async function flushOnce() {
    while (pendingMeters.size && !stopped && Date.now() >= nextTry) {
      const batch: ReadingRow[] = []
      for (const [id, r] of pendingMeters) {
        batch.push(r)
        pendingMeters.delete(id)
        if (batch.length >= batchSize) break
      }
      try {
        await send(batch)
        failures = 0
        nextTry = 0
      } catch (err) {
        const retry = err instanceof ForwardError && err.retryable
        if (retry) {
          failures++
          nextTry = Date.now() + Math.min(maxBackoffMs, flushMs * 2 ** Math.min(failures, 16))
        }
        o.log.warn(
          { err: (err as Error).message, entities: batch.length, retry, failures },
          "NGSI-LD upsert failed" + (retry ? "; the meters wait for the next try" : "; dropped"),
        )
      }
    }
  }

  const flush = async () => {
    if (inFlight) return inFlight
    inFlight = flushOnce().finally(() => (inFlight = undefined))
    return inFlight
  }

  const timer = setInterval(() => {
    if (!stopped) void flush()
  }, flushMs)
  timer.unref()
  o.log.info({ url: endpoint, batchSize, flushMs, maxPending }, "NGSI-LD forwarder on")

  return {
    get pending() {
      return pendingMeters.size
    },
    flush,
    stop: async () => {
      stopped = true
      clearInterval(timer)
      unsubscribe()
      await inFlight
    },
  }
}

class ForwardError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message)
  }
}
