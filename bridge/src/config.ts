// The bridge's configuration: ServiceConfig, and configFromEnv, which reads it from the environment
// (the README's Configuration table lists the variables; defaults in defaults.ts). A value that
// cannot work is refused here, with what to set, before anything is opened.
import type { Logger } from "pino"
import { DEFAULT_BRIDGE_USER } from "./acl.js"
import { publicBaseUrl } from "./api.js"
import type { EmbeddedBrokerOptions } from "./broker.js"
import { BRIDGE_DEFAULTS as D, type HttpLimits } from "./defaults.js"
import type { ForwarderConfig } from "./ngsi-forwarder.js"
import { readReleaseKeySetting } from "./releases.js"
import type { RolloutTiming } from "./rollouts/runner.js"
import { LINK_KEY_BYTES, connectionString } from "./wssk/protocol.js"
import { parseRole, roleValueError, type ServiceRole } from "./roles.js"
import type { StoreOptions } from "./store/engines.js"
import type { BeforeCommit } from "./ingest/index.js"
import type { DeadLetterRetention } from "./store/store.js"
import { readLogSettings, type LogSettings } from "./log.js"

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
  /** Tests only: runs inside each ingest batch's transaction before its commit (IngestOptions.beforeCommit). */
  ingestBeforeCommit?: BeforeCommit
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
  /**
   * Months that ended more than this many days ago are compacted into blocks (store/compaction.ts)
   * by the same hourly job; null: never (READINGS_HOT_DAYS=off). Default 7.
   */
  readingsHotDays?: number | null
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
  /** The WSSK endpoint (WSSK_PORT, WSSK_HOST, WSSK_MAX_LINKS, WSSK_HANDSHAKE_MS); absent: none. */
  wssk?: WsskConfig
  /** PUBLIC_URL: the API's public base URL, which absolute links start with; default: the listen address. */
  publicUrl?: string
  /** RELEASE_PUBLIC_KEY: the release key's public half, PEM (the variable holds it or its file's path). */
  releasePublicKey?: string
  /** RELEASE_MAX_BYTES: the largest release bytecode; default BRIDGE_DEFAULTS.releaseMaxBytes. */
  releaseMaxBytes?: number
  /** LOG_LEVEL and LOG_FORMAT (log.ts); unset: read from the environment, leniently. */
  logSettings?: LogSettings
  log?: Logger
}

export interface WsskConfig {
  /** 0: a free port (tests). */
  port: number
  host?: string
  maxLinks?: number
  handshakeMs?: number
  /**
   * ws://host:port where meters reach the endpoint (WSSK_PUBLIC_URL): the connection strings a
   * rollout sends name it. Default: the listener's own address.
   */
  publicUrl?: string
  /** The rollout runner's timings (tests). */
  rolloutTiming?: Partial<RolloutTiming>
}

/**
 * Settings that cannot work: one line per variable in `problems`, each naming it and the form it
 * takes (configFromEnv reports every bad variable at once; the bridge exits 2 before it opens
 * anything).
 */
export class ServiceConfigError extends Error {
  constructor(
    message: string,
    readonly problems: readonly string[] = [message],
  ) {
    super(message)
  }
}

/**
 * Reads settings, collecting what is wrong instead of stopping at the first: `take` runs one
 * setting's parser and records its ServiceConfigError, answering the fallback.
 */
class SettingsCheck {
  readonly problems: string[] = []
  constructor(readonly env: NodeJS.ProcessEnv) {}
  take<T>(parse: () => T, fallback: T): T {
    try {
      return parse()
    } catch (e) {
      if (!(e instanceof ServiceConfigError)) throw e
      this.problems.push(...e.problems)
      return fallback
    }
  }
  positiveInt(name: string, fallback: number) {
    return this.take(() => positiveInt(this.env, name, fallback), fallback)
  }
  /** A number of seconds, milliseconds or rows where 0 may mean something: finite and not negative. */
  number(name: string, fallback: number) {
    const raw = this.env[name]
    if (raw === undefined || raw === "") return fallback
    const n = Number(raw)
    if (!Number.isFinite(n) || n < 0) {
      this.problems.push(`${name} must be a number ≥ 0 (got '${raw}')`)
      return fallback
    }
    return n
  }
  /** A TCP port to listen on: 0..65535, 0 for a free one. */
  port(name: string, fallback: number) {
    const raw = this.env[name]
    if (raw === undefined || raw === "") return fallback
    if (!/^\d{1,5}$/.test(raw) || Number(raw) > 65535) {
      this.problems.push(`${name} must be a TCP port, 0..65535 (got '${raw}')`)
      return fallback
    }
    return Number(raw)
  }
}

export type ReadBudgets = { -readonly [K in keyof typeof D.reads]: number }

/** The READ_* variables and EXPORT_CONCURRENCY: positive whole numbers, each defaulting to BRIDGE_DEFAULTS.reads. */
function readBudgets(check: SettingsCheck): ReadBudgets {
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
    const raw = check.env[name]
    if (!raw) continue
    if (!/^[1-9][0-9]{0,9}$/.test(raw)) check.problems.push(`${name} must be a positive whole number (got '${raw}')`)
    else out[key] = Number(raw)
  }
  return out
}

/** READINGS_RETENTION_DAYS: unset or empty keeps readings for ever; otherwise a positive number of days. */
function retentionDays(raw: string | undefined): number | undefined {
  if (!raw) return undefined
  const d = Number(raw)
  if (!(d > 0)) throw new ServiceConfigError(`READINGS_RETENTION_DAYS must be a positive number of days (got '${raw}')`)
  return d
}

/** READINGS_HOT_DAYS: unset or empty is the default (7), `off` never compacts; otherwise a positive number of days. */
function hotDays(raw: string | undefined): number | null | undefined {
  if (!raw) return undefined
  if (raw === "off") return null
  const d = Number(raw)
  if (!(d > 0))
    throw new ServiceConfigError(`READINGS_HOT_DAYS must be a positive number of days or off (got '${raw}')`)
  return d
}

/** RELEASE_PUBLIC_KEY: an Ed25519 public key, PEM, given itself or as the path of its file. */
function releaseKey(raw: string | undefined): string | undefined {
  try {
    return readReleaseKeySetting(raw)
  } catch (e) {
    throw new ServiceConfigError(
      `RELEASE_PUBLIC_KEY must be an Ed25519 public key in PEM, or the path of its file (citymeter release keygen ` +
        `writes release-public.pem): ${(e as Error).message}`,
    )
  }
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
function httpLimits(check: SettingsCheck): HttpLimits {
  const limits: HttpLimits = { ...D.http }
  for (const [key, name] of Object.entries(HTTP_LIMIT_VARS) as [keyof HttpLimits, string][])
    limits[key] = check.positiveInt(name, D.http[key])
  if (limits.headersTimeoutMs > limits.requestTimeoutMs)
    check.problems.push("HTTP_HEADERS_TIMEOUT_MS must not exceed HTTP_REQUEST_TIMEOUT_MS")
  return limits
}

/** EXPORT_LICENSE (and its URL): a licence of the utility's own has the URL it is given, or none. */
function exportLicense(env: NodeJS.ProcessEnv): { name: string; url?: string } {
  const name = env.EXPORT_LICENSE || D.exportLicense
  const url = env.EXPORT_LICENSE_URL || (name === D.exportLicense ? D.exportLicenseUrl : undefined)
  return url ? { name, url } : { name }
}

/** WSSK_PORT set (a port, 0 for a free one): the endpoint with its bounds; unset or empty: none. */
function wsskConfig(check: SettingsCheck): WsskConfig | undefined {
  const env = check.env
  if (!env.WSSK_PORT) return undefined
  return {
    port: check.port("WSSK_PORT", 0),
    host: env.WSSK_HOST || D.wssk.host,
    maxLinks: check.positiveInt("WSSK_MAX_LINKS", D.wssk.maxLinks),
    handshakeMs: check.positiveInt("WSSK_HANDSHAKE_MS", D.wssk.handshakeMs),
    publicUrl: check.take(() => wsskPublicUrl(env.WSSK_PUBLIC_URL), undefined),
  }
}

/** WSSK_PUBLIC_URL: ws://host:port, as the runtime's connection string takes it (wssk/protocol.ts). */
function wsskPublicUrl(raw: string | undefined) {
  if (!raw) return undefined
  try {
    connectionString(raw, "m", Buffer.alloc(LINK_KEY_BYTES))
  } catch {
    throw new ServiceConfigError(`WSSK_PUBLIC_URL must be ws://host:port with no path (got '${raw}')`)
  }
  if (!raw.startsWith("ws://"))
    throw new ServiceConfigError(
      `WSSK_PUBLIC_URL must be ws:// (the firmware's update window takes no wss:// yet; got '${raw}')`,
    )
  return raw
}

/**
 * The service's configuration from the environment. Every variable that cannot work is reported at
 * once, one line each with the form it takes (ServiceConfigError.problems), before anything opens.
 */
export function configFromEnv(env = process.env): ServiceConfig {
  const check = new SettingsCheck(env)
  const mode = env.CITYMETER_MODE ?? "production"
  if (mode !== "demo" && mode !== "production")
    check.problems.push(`CITYMETER_MODE must be demo or production (got '${mode}')`)
  const role = parseRole(env.MODE)
  if (!role) check.problems.push(roleValueError(env.MODE!))
  const logs = readLogSettings(env)
  check.problems.push(...logs.problems)
  const config: ServiceConfig = {
    role: role ?? D.role,
    logSettings: logs.settings,
    demo: mode === "demo",
    mqttUrl: env.MQTT_URL || undefined,
    embeddedMqttPort: check.port("EMBEDDED_MQTT_PORT", D.embeddedMqttPort),
    databaseUrl: env.DATABASE_URL || D.databaseUrl,
    storeOptions: env.DATABASE_SCHEMA ? { schema: env.DATABASE_SCHEMA } : undefined,
    httpPort: check.port("HTTP_PORT", D.httpPort),
    httpHost: env.HTTP_HOST ?? D.httpHost,
    clientId: env.MQTT_CLIENT_ID || undefined,
    shareGroup: env.MQTT_SHARE_GROUP || undefined,
    consumers: env.MQTT_CONSUMERS ? check.positiveInt("MQTT_CONSUMERS", 1) : undefined,
    batchMaxFrames: env.INGEST_BATCH_FRAMES ? check.positiveInt("INGEST_BATCH_FRAMES", 1) : undefined,
    batchWindowMs: env.INGEST_BATCH_MS ? check.number("INGEST_BATCH_MS", 0) : undefined,
    deadLetterRetention: {
      maxRows: check.number("DEAD_LETTER_MAX_ROWS", D.deadLetterRetention.maxRows),
      maxAgeS: check.number("DEAD_LETTER_MAX_AGE_DAYS", D.deadLetterRetention.maxAgeS / 86400) * 86400,
    },
    stallMs: check.number("INGEST_STALL_S", D.stallMs / 1000) * 1000,
    rejectLogIntervalMs: check.number("REJECT_LOG_INTERVAL_S", D.rejectLogIntervalMs / 1000) * 1000,
    readingsRetentionDays: check.take(() => retentionDays(env.READINGS_RETENTION_DAYS), undefined),
    readingsHotDays: check.take(() => hotDays(env.READINGS_HOT_DAYS), undefined),
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
      maxRetainedBytes: check.positiveInt("EMBEDDED_MQTT_MAX_RETAINED_BYTES", D.embeddedMqttMaxRetainedBytes),
    },
    apiToken: env.API_TOKEN || undefined,
    apiTokens: {
      read: env.API_TOKEN_READ || undefined,
      write: env.API_TOKEN_WRITE || undefined,
      ops: env.API_TOKEN_OPS || undefined,
    },
    inactivityCheckMs: check.number("INACTIVITY_CHECK_MS", D.inactivityCheckMs),
    inactivitySlackS: check.number("INACTIVITY_SLACK_S", D.inactivitySlackS),
    exportLicense: exportLicense(env),
    reads: readBudgets(check),
    publicUrl: check.take(() => publicUrl(env.PUBLIC_URL), undefined),
    releasePublicKey: check.take(() => releaseKey(env.RELEASE_PUBLIC_KEY), undefined),
    releaseMaxBytes: check.positiveInt("RELEASE_MAX_BYTES", D.releaseMaxBytes),
    httpLimits: httpLimits(check),
    wssk: wsskConfig(check),
    ngsiLd: env.NGSI_LD_URL
      ? {
          url: env.NGSI_LD_URL,
          tenant: env.NGSI_LD_TENANT || undefined,
          batchSize: check.positiveInt("NGSI_LD_BATCH", D.ngsiLd.batchSize),
          flushMs: check.number("NGSI_LD_FLUSH_MS", D.ngsiLd.flushMs),
          maxPending: check.positiveInt("NGSI_LD_MAX_PENDING", D.ngsiLd.maxPending),
        }
      : undefined,
  }
  if (check.problems.length) throw new ServiceConfigError(check.problems.join("; "), check.problems)
  return config
}
