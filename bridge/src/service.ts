// Runs one bridge service from its configuration: broker (external or embedded), data tier,
// ingest, HTTP API. Used by bridge/src/main.ts, the demo (scripts/start.ts) and the tests.
import { readFileSync } from "node:fs"
import { statfs } from "node:fs/promises"
import { createServer } from "node:net"
import type { Logger } from "pino"
import { createLogger } from "./log.js"
import { buildApp } from "./api.js"
import { connectDownlinks, endClient, startBridge, type Bridge } from "./bridge.js"
import { startEmbeddedBroker, type EmbeddedBroker } from "./broker.js"
import { ServiceConfigError, type ReadBudgets, type ServiceConfig } from "./config.js"
import { BRIDGE_DEFAULTS as D } from "./defaults.js"
import { startInactivityChecker, type InactivityChecker } from "./inactivity.js"
import { startNightFlowChecker } from "./dma/night-check.js"
import { LiveBus } from "./live.js"
import { startForwarder, type Forwarder } from "./ngsi-forwarder.js"
import { createMetrics, withoutIngestMetrics, wsskMetrics, type Metrics } from "./metrics.js"
import { roleRefusal, type ServiceRole } from "./roles.js"
import { retry } from "./retry.js"
import { StoreConfigError, openStore } from "./store/engines.js"
import { SchemaTooNewError } from "./store/migrations.js"
import type { IngestHealth } from "./health.js"
import type { Store } from "./store/store.js"
import { WsskEndpoint } from "./wssk/endpoint.js"
import { RolloutRunner } from "./rollouts/runner.js"

// what the callers of the service import from here
export { configFromEnv, ServiceConfigError, type ReadBudgets, type ServiceConfig } from "./config.js"

export interface Service {
  role: ServiceRole
  /** The broker's URL; with MODE=api, the one downlinks go to ("" without MQTT_URL: no downlinks). */
  mqttUrl: string
  httpUrl?: string
  store: Store
  metrics: Metrics
  /** The first ingest pipeline; none with MODE=api. */
  bridge?: Bridge
  broker?: EmbeddedBroker
  inactivity?: InactivityChecker
  app: ReturnType<typeof buildApp>
  /** What ingest commits, for open dashboards (GET /events). */
  live: LiveBus
  /** The NGSI-LD forwarder, when NGSI_LD_URL is set. */
  forwarder?: Forwarder
  /** The WSSK endpoint, when WSSK_PORT is set: meters' own cloud links, for updates. */
  wssk?: WsskEndpoint
  /** The rollout runner, with the WSSK endpoint (issue 23). */
  rollouts?: RolloutRunner
  /** Ingest's health; none with MODE=api. */
  ingestHealth?(): IngestHealth
  /** Closes what the start opened, last first (ingest drains its frames in hand); once, however often called. */
  stop(): Promise<void>
}

/**
 * Fails at once (EADDRINUSE, with the port) when a fixed port is taken, before the data tier is
 * opened: a user learns it in a moment, not after the store's start-up. The real listen follows.
 */
async function checkPortFree(port: number | undefined, host: string): Promise<void> {
  if (!port) return
  const srv = createServer()
  await new Promise<void>((resolve, reject) => {
    srv.once("error", reject)
    srv.listen({ port, host, exclusive: true }, () => srv.close(() => resolve()))
  })
}

/** The bridge's broker login and CA, for every MQTT connection it makes. */
const mqttOptions = (c: ServiceConfig) => ({
  username: c.mqttUsername,
  password: c.mqttPassword,
  ...(c.mqttCaFile ? { ca: readFileSync(c.mqttCaFile), rejectUnauthorized: true } : {}),
})

/** The bridge starts even when the data tier is down: it waits for it (logged), then subscribes. */
async function openStoreWithRetry(c: ServiceConfig, log: Logger): Promise<Store> {
  return retry(() => openStore(c.databaseUrl, c.storeOptions), {
    retryable: (e) => !(e instanceof StoreConfigError || e instanceof SchemaTooNewError),
    onRetry: (e, attempt) => {
      if (attempt % 10 === 0) log.error({ err: (e as Error).message, attempt }, "data tier unavailable; retrying")
    },
  }).catch((e: unknown) => {
    // an older bridge on an upgraded data tier (a rollback without the restore): refused, not retried
    throw e instanceof SchemaTooNewError ? new ServiceConfigError(e.message) : e
  })
}

/**
 * The periodic jobs of ingest (roles.ts: not in an API-only process): the inactivity check,
 * dead-letter retention, the readings partitions' upkeep and the DMAs' night-flow check (with it, hourly).
 */
function startJobs(c: ServiceConfig, store: Store, metrics: Metrics, log: Logger, live: LiveBus) {
  const inactivity = startInactivityChecker({
    store,
    metrics,
    log,
    everyMs: c.inactivityCheckMs ?? D.inactivityCheckMs,
    slackS: c.inactivitySlackS ?? D.inactivitySlackS,
    live,
  })
  const retention = c.deadLetterRetention ?? D.deadLetterRetention
  const prune = async () => {
    try {
      const n = await store.pruneDeadLetters(retention, new Date())
      metrics.deadLettersPruned.inc(n)
      if (n) log.info({ deleted: n, ...retention }, "dead letters pruned")
    } catch (e) {
      log.warn({ err: (e as Error).message }, "dead-letter retention failed; next run retries")
    }
  }
  void prune()
  const pruner = setInterval(() => void prune(), c.deadLetterPruneMs ?? D.deadLetterPruneMs)
  pruner.unref()
  const maintain = async () => {
    try {
      const done = await store.maintainReadings(new Date(), c.readingsRetentionDays)
      if (done.created.length || done.dropped.length || done.deletedRows || done.deletedBlocks)
        log.info({ ...done, retentionDays: c.readingsRetentionDays ?? null }, "readings partitions maintained")
      const hot = c.readingsHotDays === undefined ? D.readingsHotDays : c.readingsHotDays
      if (hot === null) return
      const t0 = performance.now()
      const packed = await store.compactReadings(new Date(Date.now() - hot * 86_400_000))
      metrics.readingsCompacted.inc(packed.readings)
      metrics.blocksWritten.inc({ kind: "new" }, packed.blocks - packed.merged)
      metrics.blocksWritten.inc({ kind: "merged" }, packed.merged)
      if (packed.readings || packed.truncated.length)
        log.info({ ...packed, hotDays: hot, ms: Math.round(performance.now() - t0) }, "readings compacted")
      // the frame ledger too: frames received before the hot window, into blocks of digests
      const ledger = await store.compactLedger(new Date(Date.now() - hot * 86_400_000))
      if (ledger.frames) log.info({ ...ledger, hotDays: hot }, "frame ledger compacted")
    } catch (e) {
      log.warn({ err: (e as Error).message }, "readings maintenance failed; next run retries")
    }
  }
  void maintain()
  const maintainer = setInterval(() => void maintain(), c.readingsMaintenanceMs ?? D.readingsMaintenanceMs)
  maintainer.unref()
  const nightFlow = startNightFlowChecker({
    store,
    log,
    everyMs: c.readingsMaintenanceMs ?? D.readingsMaintenanceMs,
  })
  return {
    inactivity,
    stop: async () => {
      clearInterval(pruner)
      clearInterval(maintainer)
      await nightFlow.stop()
      await inactivity.stop()
    },
  }
}

/**
 * What startService has opened, each with its closer. stop() closes them in the reverse order of
 * their opening, as does a start whose later step fails, before the failure is rethrown: a failed
 * start leaves nothing open (tests/system/startup.test.ts).
 */
class Opened {
  private readonly closers: { what: string; close: () => unknown }[] = []
  private closing?: Promise<void>
  constructor(private readonly log: Logger) {}

  /** Registers what was just opened. */
  add(what: string, close: () => unknown) {
    this.closers.push({ what, close })
  }

  /** Closes everything registered, last first; a closer that fails is logged and the next one runs. Once only. */
  closeAll(): Promise<void> {
    this.closing ??= (async () => {
      for (const { what, close } of this.closers.splice(0).reverse())
        try {
          await close()
        } catch (e) {
          this.log.warn({ err: (e as Error).message, what }, "closing failed")
        }
    })()
    return this.closing
  }
}

/** Settings that cannot work together: refused before anything is opened. */
function checkConfig(c: ServiceConfig, role: ServiceRole, log: Logger) {
  const refusal = roleRefusal(role, c)
  if (refusal) throw new ServiceConfigError(refusal)
  if (role === "api") return
  if (!c.mqttUrl && !c.embeddedBroker?.passwordFile) {
    if (!c.demo)
      throw new ServiceConfigError(
        "the embedded broker accepts anonymous clients only in the demo (npm start): set EMBEDDED_MQTT_PASSWORD_FILE, or MQTT_URL for your broker",
      )
    log.warn("demo mode: the embedded broker accepts anonymous clients, and meters register with their first frame")
  }
  if (consumerCount(c) > 1 && !c.mqttUrl)
    throw new ServiceConfigError(
      "several consumers need an MQTT 5 broker (MQTT_URL): the embedded broker has no shared subscriptions",
    )
}

const consumerCount = (c: ServiceConfig) => Math.max(1, Math.floor(c.consumers ?? D.consumers))

export async function startService(c: ServiceConfig): Promise<Service> {
  const log = c.log ?? createLogger("citymeter-bridge", c.logSettings)
  // MODE (roles.ts): api runs no broker, subscription, ingest or jobs; ingest serves only the probes
  const role = c.role ?? D.role
  checkConfig(c, role, log)
  await checkPortFree(c.httpPort, c.httpHost ?? D.httpHost)
  await checkPortFree(c.wssk?.port, c.wssk?.host ?? D.wssk.host)
  if (role !== "api" && !c.mqttUrl) await checkPortFree(c.embeddedMqttPort, "127.0.0.1")
  const opened = new Opened(log)
  try {
    return await openService(c, role, log, opened)
  } catch (e) {
    await opened.closeAll()
    throw e
  }
}

/** The steps of startService, each registering in `opened` what it opened. */
async function openService(c: ServiceConfig, role: ServiceRole, log: Logger, opened: Opened): Promise<Service> {
  const ingests = role !== "api"
  const reads: ReadBudgets = { ...D.reads, ...c.reads }
  const store = await openStoreWithRetry(
    {
      ...c,
      storeOptions: {
        ...c.storeOptions,
        reads: {
          statementMs: reads.statementMs,
          concurrency: reads.concurrency,
          sharePct: reads.sharePct,
          maxCost: reads.maxCost,
        },
        onRestart: (why, ms) => log.warn({ why, awayMs: Math.round(ms) }, "embedded database reopened"),
      },
    },
    log,
  )
  opened.add("store", () => store.close())
  const metrics = ingests ? createMetrics(true) : withoutIngestMetrics(createMetrics(true))
  const broker =
    c.mqttUrl || !ingests
      ? undefined
      : await startEmbeddedBroker(c.embeddedMqttPort ?? 0, "127.0.0.1", { ...c.embeddedBroker, metrics, log })
  if (broker) opened.add("embedded broker", () => broker.close())
  const mqttUrl = c.mqttUrl ?? broker?.url
  metrics.setDeadLetterSource(() => store.countDeadLetters())
  const live = new LiveBus()
  const consumers = consumerCount(c)
  // subscribed before ingest starts: it sees every committed reading
  if (c.ngsiLd && !ingests) log.warn("MODE=api: NGSI_LD_URL is ignored here; the ingest process forwards")
  const forwarder = c.ngsiLd && ingests ? startForwarder({ ...c.ngsiLd, store, metrics, log, live }) : undefined
  if (forwarder) opened.add("NGSI-LD forwarder", () => forwarder.stop())
  const baseId = c.clientId ?? `citymeter-bridge-${process.pid}`
  // the pipelines drain together on stop (each commits and acknowledges the frames it has in hand)
  const bridges: Bridge[] = []
  opened.add("ingest", () => Promise.all(bridges.map((b) => b.stop())))
  for (let i = 0; i < (ingests ? consumers : 0); i++)
    bridges.push(
      startBridge({
        mqttUrl: mqttUrl!,
        store,
        metrics,
        log,
        clientId: consumers > 1 ? `${baseId}-${i}` : baseId,
        shareGroup: c.shareGroup ?? (consumers > 1 ? D.consumersShareGroup : undefined),
        autoRegister: c.autoRegister ?? !!c.demo,
        batchMaxFrames: c.batchMaxFrames,
        batchWindowMs: c.batchWindowMs,
        beforeCommit: c.ingestBeforeCommit,
        rejectLogIntervalMs: c.rejectLogIntervalMs,
        live,
        mqttOptions: mqttOptions(c),
      }),
    )
  const bridge = bridges.at(0)
  // MODE=api: downlinks on a publish-only connection of its own (none without MQTT_URL: 503)
  const apiDownlinks =
    !ingests && mqttUrl
      ? connectDownlinks({ mqttUrl, clientId: `${baseId}-api`, log, mqttOptions: mqttOptions(c) })
      : undefined
  if (apiDownlinks) opened.add("API downlinks", () => endClient(apiDownlinks.client))
  const stallMs = c.stallMs ?? D.stallMs
  const ingestHealth = (): IngestHealth => {
    const now = performance.now()
    let busyMs = 0
    let failingMs = 0
    for (const b of bridges) {
      const h = b.ingest.health(now)
      busyMs = Math.max(busyMs, h.busyMs)
      failingMs = Math.max(failingMs, h.failingMs)
    }
    const subscribed = bridges.every((b) => b.subscribed)
    const reason = !subscribed
      ? "no uplink subscription"
      : failingMs > stallMs
        ? `the data tier has failed for ${Math.round(failingMs / 1000)} s`
        : busyMs > stallMs
          ? `a frame has waited ${Math.round(busyMs / 1000)} s for its commit`
          : undefined
    return { subscribed, stalled: reason !== undefined, oldestUnackedS: busyMs / 1000, reason }
  }
  if (ingests) metrics.setHealthSource(ingestHealth)
  metrics.setOnlineSource(() => store.countOnline())
  metrics.setFleetSource(() => store.fleetCounts())
  const dataDir = embeddedDataDir(c.databaseUrl)
  if (dataDir) metrics.setDiskSource(() => diskOf(dataDir))
  // the key is looked up per handshake, so a key set through the API holds for the next link
  const wssk = c.wssk
    ? await WsskEndpoint.start({
        linkKey: (meterId) => store.linkKey(meterId),
        port: c.wssk.port,
        host: c.wssk.host ?? D.wssk.host,
        maxLinks: c.wssk.maxLinks ?? D.wssk.maxLinks,
        handshakeMs: c.wssk.handshakeMs ?? D.wssk.handshakeMs,
        log,
        logIntervalMs: c.rejectLogIntervalMs ?? D.rejectLogIntervalMs,
        metrics: wsskMetrics(metrics),
      })
    : undefined
  if (wssk) {
    opened.add("WSSK endpoint", () => wssk.close())
    log.info({ url: wssk.url }, "WSSK endpoint listening")
  }
  // The HTTP API (health, readiness, reads) comes up before, and apart from, the subscription and
  // whatever backlog the broker holds for it.
  const app = buildApp({
    store,
    metrics,
    downlink: bridge?.send ?? apiDownlinks?.send,
    apiToken: c.apiToken,
    apiTokens: c.apiTokens,
    ingestHealth: ingests ? ingestHealth : undefined,
    live,
    exportLicense: c.exportLicense,
    reads,
    probesOnly: role === "ingest",
    publicUrl: c.publicUrl,
    httpLimits: c.httpLimits,
    releasePublicKey: c.releasePublicKey,
    releaseMaxBytes: c.releaseMaxBytes,
    wssk,
    log,
  })
  opened.add("HTTP API", () => app.close())
  let httpUrl: string | undefined
  if (c.httpPort !== undefined) {
    httpUrl = await app.listen({ port: c.httpPort, host: c.httpHost ?? D.httpHost })
  } else await app.ready() // routes loaded (the API page's among them) before the first request
  await Promise.all(bridges.map((b) => b.ready))
  const jobs = ingests ? startJobs(c, store, metrics, log, live) : undefined
  if (jobs) opened.add("jobs", () => jobs.stop())
  // rollouts run where the meters' links end: the process with the WSSK endpoint
  const send = bridge?.send ?? apiDownlinks?.send
  const rollouts =
    wssk && send
      ? new RolloutRunner({
          store,
          wssk,
          downlink: send,
          wsskUrl: c.wssk?.publicUrl ?? wssk.url,
          log,
          metrics,
          timing: c.wssk?.rolloutTiming,
        })
      : undefined
  if (rollouts) {
    await rollouts.start()
    opened.add("rollouts", () => rollouts.stop())
  }
  return {
    role,
    mqttUrl: mqttUrl ?? "",
    httpUrl,
    store,
    metrics,
    bridge,
    broker,
    inactivity: jobs?.inactivity,
    app,
    live,
    forwarder,
    wssk,
    rollouts,
    ingestHealth: ingests ? ingestHealth : undefined,
    stop: () => opened.closeAll(),
  }
}

/** The directory of a `pglite:<dir>` URL (none for postgres:// or pglite:memory). */
export function embeddedDataDir(databaseUrl: string): string | undefined {
  if (!databaseUrl.startsWith("pglite:")) return undefined
  const dir = databaseUrl.slice("pglite:".length)
  return dir && dir !== "memory" ? dir : undefined
}

/** Free and total bytes of the filesystem holding `dir` (citymeter_data_dir_*_bytes). */
export async function diskOf(dir: string) {
  const s = await statfs(dir)
  return { path: dir, freeBytes: s.bavail * s.bsize, sizeBytes: s.blocks * s.bsize }
}
