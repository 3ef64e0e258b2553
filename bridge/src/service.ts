// Runs one bridge service from its configuration: broker (external or embedded), data tier,
// ingest, HTTP API. Used by bridge/src/main.ts, the demo (scripts/start.ts) and the tests.
import { readFileSync } from "node:fs"
import { createServer } from "node:net"
import pino, { type Logger } from "pino"
import { DEFAULT_BRIDGE_USER } from "./acl.js"
import { buildApp, publicBaseUrl } from "./api.js"
import { connectDownlinks, endClient, startBridge, type Bridge } from "./bridge.js"
import { startEmbeddedBroker, type EmbeddedBroker, type EmbeddedBrokerOptions } from "./broker.js"
import { BRIDGE_DEFAULTS as D, type HttpLimits } from "./defaults.js"
import { startInactivityChecker, type InactivityChecker } from "./inactivity.js"
import { LiveBus } from "./live.js"
import { startForwarder, type Forwarder, type ForwarderConfig } from "./ngsi-forwarder.js"
import { createMetrics, withoutIngestMetrics, type Metrics } from "./metrics.js"
import { parseRole, roleRefusal, roleValueError, type ServiceRole } from "./roles.js"
import { retry } from "./retry.js"
import { StoreConfigError, openStore, type StoreOptions } from "./store/engines.js"
import type { IngestHealth } from "./health.js"
import type { DeadLetterRetention, Store } from "./store/store.js"

export interface ServiceConfig {
  /** MODE: all (default), api (HTTP API only) or ingest (subscription, ingest, jobs; probes only): roles.ts. */
  role?: ServiceRole
  /** External broker; when absent an embedded broker is started on embeddedMqttPort. */
  mqttUrl?: string
  embeddedMqttPort?: number
  /** postgres://… or pglite:<dir> / pglite:memory */
  databaseUrl: string
  storeOptions?: StoreOptions
  httpPort?: number
  httpHost?: string
  clientId?: string
  shareGroup?: string
  /**
   * Ingest pipelines in this process, each with its own MQTT client and batches, sharing the uplink
   * through an MQTT 5 shared subscription (MQTT 5 broker required; not aedes).
   */
  consumers?: number
  /** Ingest batches: most frames per transaction, and how long an idle pipeline gathers (ms). */
  batchMaxFrames?: number
  batchWindowMs?: number
  /** Fault injection for tests: SIGKILL inside the first batch of at least this many frames (IngestOptions). */
  faultKillInBatch?: number
  /**
   * The demo (`npm start`): meters register themselves with their first frame, and the embedded
   * broker accepts anonymous clients. Anything else is production: frames only from provisioned
   * meters, and the embedded broker needs a password file.
   */
  demo?: boolean
  /** Override the registry rule of the mode (tests of either rule). */
  autoRegister?: boolean
  /** Dead-letter retention (defaults: 100,000 rows, 30 days) and how often it runs (ms, default 10 s). */
  deadLetterRetention?: DeadLetterRetention
  deadLetterPruneMs?: number
  /**
   * Readings older than this many days are dropped (whole monthly partitions; rollups are kept).
   * Default: kept for ever. The same job makes next months' partitions ahead; it runs hourly.
   */
  readingsRetentionDays?: number
  readingsMaintenanceMs?: number
  /** Rejected frames: a sample and a count per reason every this many ms (REJECT_LOG_INTERVAL_S). */
  rejectLogIntervalMs?: number
  /** Ingest counts as stalled when a frame waits longer than this for its commit, or the data tier fails as long (ms). */
  stallMs?: number
  /** The bridge's MQTT login (per-meter credentials: the broker's bridge user). */
  mqttUsername?: string
  mqttPassword?: string
  /** PEM CA certificate that signed the broker's TLS certificate (mqtts:// with a private CA). */
  mqttCaFile?: string
  /** Embedded broker: Mosquitto password file enabling logins and the topic ACL, and TLS files. */
  embeddedBroker?: EmbeddedBrokerOptions
  /** Bearer token for API writes and downlinks; unset: writes are refused. */
  apiToken?: string
  /** Scoped tokens (bridge/src/routes/auth.ts): read, write (downlinks), ops (registry, dead letters). */
  apiTokens?: Partial<Record<"read" | "write" | "ops", string>>
  /** Inactivity check period (ms) and slack (s) beyond 2 × interval × batch. */
  inactivityCheckMs?: number
  inactivitySlackS?: number
  /** Push meters' newest state to an NGSI-LD context broker (NGSI_LD_URL …); absent: off. */
  ngsiLd?: ForwarderConfig
  /** The licence of the bulk export (EXPORT_LICENSE, EXPORT_LICENSE_URL); default CC-BY-4.0. */
  exportLicense?: { name: string; url?: string }
  /** Budgets of the open reads (READ_*, EXPORT_CONCURRENCY); defaults: BRIDGE_DEFAULTS.reads. */
  reads?: Partial<ReadBudgets>
  /** Caps and timeouts of HTTP clients (HTTP_MAX_CONNECTIONS, …, LIVE_MAX_BUFFER_BYTES); default BRIDGE_DEFAULTS.http. */
  httpLimits?: Partial<HttpLimits>
  /** PUBLIC_URL: the API's public base URL, which absolute links start with; default: the listen address. */
  publicUrl?: string
  log?: Logger
}

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
  /** Ingest's health; none with MODE=api. */
  ingestHealth?(): IngestHealth
  /** Closes what the start opened, last first (ingest drains its frames in hand); once, however often called. */
  stop(): Promise<void>
}

/** A setting that cannot work: the message says what to set. */
export class ServiceConfigError extends Error {}

export type ReadBudgets = { -readonly [K in keyof typeof D.reads]: number }

/** The READ_* variables and EXPORT_CONCURRENCY: positive whole numbers, each defaulting to BRIDGE_DEFAULTS.reads. */
function readBudgets(env: NodeJS.ProcessEnv): ReadBudgets {
  const vars: Record<keyof ReadBudgets, string> = {
    statementMs: "READ_STATEMENT_MS",
    concurrency: "READ_CONCURRENCY",
    queue: "READ_QUEUE",
    maxEntities: "READ_MAX_ENTITIES",
    maxBytes: "READ_MAX_BYTES",
    exportConcurrency: "EXPORT_CONCURRENCY",
    sharePct: "READ_SHARE_PCT",
    maxCost: "READ_MAX_COST",
  }
  const out = { ...D.reads } as ReadBudgets
  for (const [key, name] of Object.entries(vars) as [keyof ReadBudgets, string][]) {
    const raw = env[name]
    if (!raw) continue
    if (!/^[1-9][0-9]{0,9}$/.test(raw))
      throw new ServiceConfigError(`${name} must be a positive whole number (got '${raw}')`)
    out[key] = Number(raw)
  }
  return out
}

/** READINGS_RETENTION_DAYS: unset or empty keeps readings for ever; otherwise a positive number of days. */
function retentionDays(raw: string | undefined): number | undefined {
  if (!raw) return undefined
  const d = Number(raw)
  if (!(d > 0)) throw new Error(`READINGS_RETENTION_DAYS must be a positive number of days (got '${raw}')`)
  return d
}

/** PUBLIC_URL: unset or empty derives it from the listen address; otherwise an absolute http(s) URL. */
function publicUrl(raw: string | undefined): string | undefined {
  if (!raw) return undefined
  const url = publicBaseUrl(raw)
  if (!url)
    throw new ServiceConfigError(
      `PUBLIC_URL must be an absolute http(s) URL without query or fragment, e.g. https://data.city.example (got '${raw}')`,
    )
  return url
}

/** The environment variable of each HTTP cap and timeout. */
const HTTP_LIMIT_VARS: Record<keyof HttpLimits, string> = {
  maxConnections: "HTTP_MAX_CONNECTIONS",
  idleTimeoutMs: "HTTP_IDLE_TIMEOUT_MS",
  headersTimeoutMs: "HTTP_HEADERS_TIMEOUT_MS",
  requestTimeoutMs: "HTTP_REQUEST_TIMEOUT_MS",
  keepAliveTimeoutMs: "HTTP_KEEP_ALIVE_TIMEOUT_MS",
  liveMaxClients: "LIVE_MAX_CLIENTS",
  liveMaxBufferBytes: "LIVE_MAX_BUFFER_BYTES",
}

/** A setting that is a count or a size: a positive integer (decimal digits), or `fallback` when unset. */
function positiveInt(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name]
  if (!raw) return fallback
  const n = Number(raw)
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n <= 0)
    throw new ServiceConfigError(`${name} must be a positive integer (got '${raw}')`)
  return n
}

/** The HTTP caps and timeouts, each unset one BRIDGE_DEFAULTS.http's. */
function httpLimits(env: NodeJS.ProcessEnv): HttpLimits {
  const limits: HttpLimits = { ...D.http }
  for (const [key, name] of Object.entries(HTTP_LIMIT_VARS) as [keyof HttpLimits, string][])
    limits[key] = positiveInt(env, name, D.http[key])
  if (limits.headersTimeoutMs > limits.requestTimeoutMs)
    throw new ServiceConfigError("HTTP_HEADERS_TIMEOUT_MS must not exceed HTTP_REQUEST_TIMEOUT_MS")
  return limits
}

/** EXPORT_LICENSE (and its URL): a licence of the utility's own has the URL it is given, or none. */
function exportLicense(env: NodeJS.ProcessEnv): { name: string; url?: string } {
  const name = env.EXPORT_LICENSE || D.exportLicense
  const url = env.EXPORT_LICENSE_URL || (name === D.exportLicense ? D.exportLicenseUrl : undefined)
  return url ? { name, url } : { name }
}

export function configFromEnv(env = process.env): ServiceConfig {
  const mode = env.CITYMETER_MODE ?? "production"
  if (mode !== "demo" && mode !== "production")
    throw new ServiceConfigError(`CITYMETER_MODE must be demo or production (got ${mode})`)
  const role = parseRole(env.MODE)
  if (!role) throw new ServiceConfigError(roleValueError(env.MODE!))
  return {
    role,
    demo: mode === "demo",
    mqttUrl: env.MQTT_URL || undefined,
    embeddedMqttPort: Number(env.EMBEDDED_MQTT_PORT ?? D.embeddedMqttPort),
    databaseUrl: env.DATABASE_URL || D.databaseUrl,
    storeOptions: env.DATABASE_SCHEMA ? { schema: env.DATABASE_SCHEMA } : undefined,
    httpPort: Number(env.HTTP_PORT ?? D.httpPort),
    httpHost: env.HTTP_HOST ?? D.httpHost,
    clientId: env.MQTT_CLIENT_ID || undefined,
    shareGroup: env.MQTT_SHARE_GROUP || undefined,
    consumers: env.MQTT_CONSUMERS ? Number(env.MQTT_CONSUMERS) : undefined,
    batchMaxFrames: env.INGEST_BATCH_FRAMES ? Number(env.INGEST_BATCH_FRAMES) : undefined,
    batchWindowMs: env.INGEST_BATCH_MS ? Number(env.INGEST_BATCH_MS) : undefined,
    faultKillInBatch: env.CITYMETER_FAULT_KILL_IN_BATCH ? Number(env.CITYMETER_FAULT_KILL_IN_BATCH) : undefined,
    deadLetterRetention: {
      maxRows: Number(env.DEAD_LETTER_MAX_ROWS ?? D.deadLetterRetention.maxRows),
      maxAgeS: Number(env.DEAD_LETTER_MAX_AGE_DAYS ?? D.deadLetterRetention.maxAgeS / 86400) * 86400,
    },
    stallMs: Number(env.INGEST_STALL_S ?? D.stallMs / 1000) * 1000,
    rejectLogIntervalMs: Number(env.REJECT_LOG_INTERVAL_S ?? D.rejectLogIntervalMs / 1000) * 1000,
    readingsRetentionDays: retentionDays(env.READINGS_RETENTION_DAYS),
    mqttUsername: env.MQTT_USERNAME || undefined,
    mqttPassword: env.MQTT_PASSWORD || undefined,
    mqttCaFile: env.MQTT_CA_FILE || undefined,
    embeddedBroker: {
      passwordFile: env.EMBEDDED_MQTT_PASSWORD_FILE || undefined,
      bridgeUser: env.MQTT_USERNAME || DEFAULT_BRIDGE_USER,
      tls:
        env.EMBEDDED_MQTT_TLS_CERT && env.EMBEDDED_MQTT_TLS_KEY
          ? { certFile: env.EMBEDDED_MQTT_TLS_CERT, keyFile: env.EMBEDDED_MQTT_TLS_KEY }
          : undefined,
      maxRetainedBytes: positiveInt(env, "EMBEDDED_MQTT_MAX_RETAINED_BYTES", D.embeddedMqttMaxRetainedBytes),
    },
    apiToken: env.API_TOKEN || undefined,
    apiTokens: {
      read: env.API_TOKEN_READ || undefined,
      write: env.API_TOKEN_WRITE || undefined,
      ops: env.API_TOKEN_OPS || undefined,
    },
    inactivityCheckMs: Number(env.INACTIVITY_CHECK_MS ?? D.inactivityCheckMs),
    inactivitySlackS: Number(env.INACTIVITY_SLACK_S ?? D.inactivitySlackS),
    exportLicense: exportLicense(env),
    reads: readBudgets(env),
    publicUrl: publicUrl(env.PUBLIC_URL),
    httpLimits: httpLimits(env),
    ngsiLd: env.NGSI_LD_URL
      ? {
          url: env.NGSI_LD_URL,
          tenant: env.NGSI_LD_TENANT || undefined,
          batchSize: Number(env.NGSI_LD_BATCH ?? D.ngsiLd.batchSize),
          flushMs: Number(env.NGSI_LD_FLUSH_MS ?? D.ngsiLd.flushMs),
          maxPending: Number(env.NGSI_LD_MAX_PENDING ?? D.ngsiLd.maxPending),
        }
      : undefined,
  }
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
    retryable: (e) => !(e instanceof StoreConfigError),
    onRetry: (e, attempt) => {
      if (attempt % 10 === 0) log.error({ err: (e as Error).message, attempt }, "data tier unavailable; retrying")
    },
  })
}

/**
 * The periodic jobs of ingest (roles.ts: not in an API-only process): the inactivity check,
 * dead-letter retention and the readings partitions' upkeep.
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
      if (done.created.length || done.dropped.length || done.deletedRows)
        log.info({ ...done, retentionDays: c.readingsRetentionDays ?? null }, "readings partitions maintained")
    } catch (e) {
      log.warn({ err: (e as Error).message }, "readings maintenance failed; next run retries")
    }
  }
  void maintain()
  const maintainer = setInterval(() => void maintain(), c.readingsMaintenanceMs ?? D.readingsMaintenanceMs)
  maintainer.unref()
  return {
    inactivity,
    stop: async () => {
      clearInterval(pruner)
      clearInterval(maintainer)
      await inactivity.stop()
    },
  }
}

/**
 * What startService has opened, each with its closer. stop() closes them in the reverse order of
 * their opening, as does a start whose later step fails, before the failure is rethrown: a failed
 * start leaves nothing open (tests/startup.test.ts).
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
  const log = c.log ?? pino({ name: "citymeter-bridge", level: process.env.LOG_LEVEL ?? "info" })
  // MODE (roles.ts): api runs no broker, subscription, ingest or jobs; ingest serves only the probes
  const role = c.role ?? D.role
  checkConfig(c, role, log)
  await checkPortFree(c.httpPort, c.httpHost ?? D.httpHost)
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
        faultKillInBatch: c.faultKillInBatch,
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
    readGates: reads,
    reads,
    probesOnly: role === "ingest",
    publicUrl: c.publicUrl,
    httpLimits: c.httpLimits,
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
    ingestHealth: ingests ? ingestHealth : undefined,
    stop: () => opened.closeAll(),
  }
}
