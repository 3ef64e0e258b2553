// HTTP API over the data tier. buildApp never listens (tests use app.inject); service.ts does.
// Reads are open (city open data); writes, downlinks, the registry and dead letters need
// `Authorization: Bearer <API_TOKEN>`. Routes are fastify plugins in routes/ (one per resource);
// errors come from one registry (errors.ts) in one shape. The OpenAPI description is generated
// from the route schemas and served at /openapi.json.
import { randomUUID } from "node:crypto"
import type { Socket } from "node:net"
import swagger from "@fastify/swagger"
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from "fastify"
import type { Logger } from "pino"
import { createLogger } from "./log.js"
import type { IngestHealth } from "./health.js"
import type { Metrics } from "./metrics.js"
import type { LiveBus } from "./live.js"
import { alarmAckRoutes } from "./routes/alarm-acks.js"
import { alarmRoutes } from "./routes/alarms.js"
import { dashboardRoutes, isPagePath } from "./routes/dashboard.js"
import { liveRoutes } from "./routes/live.js"
import { locationRoutes } from "./routes/locations.js"
import { SCOPES, readsGuarded, requireScope, type ApiTokens, type Scope } from "./routes/auth.js"
import { deadLetterRoutes } from "./routes/dead-letters.js"
import { deviceLogRoutes } from "./routes/device-log.js"
import { dmaLossRoutes } from "./routes/dma-losses.js"
import { dmaRoutes } from "./routes/dmas.js"
import { downlinkRoutes } from "./routes/downlinks.js"
import { exportRoutes, type ExportLicense } from "./routes/export.js"
import { frameworkErrors, installErrorHandling, markStoreErrors } from "./routes/error-handler.js"
import { meterRoutes } from "./routes/meters.js"
import { ngsiLdRoutes } from "./routes/ngsi-ld.js"
import { opsRoutes } from "./routes/ops.js"
import { readingRoutes } from "./routes/readings.js"
import { releaseRoutes } from "./routes/releases.js"
import { rolloutRoutes } from "./routes/rollouts.js"
import { sensorThingsRoutes } from "./routes/sensorthings.js"
import { readQueryTypes, type Downlink, type RouteContext } from "./routes/shared.js"
import { installReadGates, readGates } from "./routes/read-gate.js"
import { BRIDGE_DEFAULTS, type HttpLimits } from "./defaults.js"
import { errors } from "./errors.js"
import { releasePublicKey, repoBoards } from "./releases.js"
import type { WsskEndpoint } from "./wssk/endpoint.js"
import type { StaBudgets } from "./sta/budget.js"
import type { Store } from "./store/store.js"
import { VERSION } from "./version.js"

export { CSV_COLUMNS } from "./routes/readings.js"
export type { Downlink } from "./routes/shared.js"

/** Largest request body (bytes): the biggest one, a full Config, is about 300 bytes of JSON. */
export const BODY_LIMIT = 16 * 1024

/** The longest path parameter (characters); each route's schema may allow less. */
export const MAX_PARAM_LENGTH = 512

/** Liveness, readiness, metrics and the API description stay open when reads are guarded. */
const OPEN_PATHS = new Set(["/healthz", "/readyz", "/metrics", "/openapi.json"])

export interface AppOptions {
  store: Store
  metrics: Metrics
  /** fastify's own logger with request logging (tests); without it, `log` serves and requests are not logged. */
  logger?: boolean | object
  /**
   * The app's logger: every 5xx is logged on it with its request id, also while request logging
   * is off (service.ts passes the bridge's). Default: a logger on stdout at LOG_LEVEL, JSON or readable by the terminal (log.ts).
   */
  log?: Logger
  /** Sends a downlink to a meter (service.ts wires the bridge's MQTT client). */
  downlink?: Downlink
  /** Bearer token with every scope (API_TOKEN); without any token, guarded routes answer 401. */
  apiToken?: string
  /** Scoped tokens (routes/auth.ts): write (downlinks), ops (registry, dead letters), read (reads). */
  apiTokens?: Partial<Record<Scope, string>>
  /** Ingest health for /readyz (service.ts wires the bridge's pipelines); absent: not checked. */
  ingestHealth?: () => IngestHealth
  /** What ingest commits, streamed to open dashboards by GET /events (service.ts wires it). */
  live?: LiveBus
  /** The licence the utility publishes its readings under (EXPORT_LICENSE); default CC-BY-4.0. */
  exportLicense?: ExportLicense
  /**
   * The read budgets the routes enforce, each defaulting to BRIDGE_DEFAULTS.reads: one SensorThings
   * answer's cost (READ_MAX_ENTITIES, READ_MAX_BYTES) and the expensive reads at once and waiting
   * (READ_CONCURRENCY, READ_QUEUE, EXPORT_CONCURRENCY; routes/read-gate.ts).
   */
  reads?: Partial<StaBudgets & { concurrency: number; queue: number; exportConcurrency: number }>
  /** Only /healthz, /readyz, /metrics (and /openapi.json): an ingest-only process (MODE=ingest). */
  probesOnly?: boolean
  /**
   * The public base URL of the API (PUBLIC_URL, e.g. https://data.city.example/meters): absolute
   * links start with it. Default: the address the app listens on (http://127.0.0.1:8080), or
   * DEFAULT_PUBLIC_URL before it listens. Never the request's Host header.
   */
  publicUrl?: string
  /** Caps and timeouts of HTTP clients (HTTP_MAX_CONNECTIONS, …); each left out is BRIDGE_DEFAULTS.http's. */
  httpLimits?: Partial<HttpLimits>
  /** The release public key, PEM (RELEASE_PUBLIC_KEY); absent: POST /releases answers CM_ERR_NO_RELEASE_KEY. */
  releasePublicKey?: string
  /** The largest release bytecode, bytes (RELEASE_MAX_BYTES); default BRIDGE_DEFAULTS.releaseMaxBytes. */
  releaseMaxBytes?: number
  /** The boards a release may be for; default this repository's boards/*.board.json. */
  releaseBoards?: Set<string>
  /** The WSSK endpoint (service.ts, WSSK_PORT): meters' cloud links, for the device log route. */
  wssk?: WsskEndpoint
}

/** The public URL of an app that does not listen (app.inject): the default listener's. */
export const DEFAULT_PUBLIC_URL = `http://${BRIDGE_DEFAULTS.httpHost}:${BRIDGE_DEFAULTS.httpPort}`

/**
 * A public base URL as configured: an absolute http(s) URL with no query or fragment, returned
 * without its trailing slash; undefined when it is not one.
 */
export function publicBaseUrl(raw: string): string | undefined {
  let u: URL
  try {
    u = new URL(raw)
  } catch {
    return undefined
  }
  if ((u.protocol !== "http:" && u.protocol !== "https:") || u.search || u.hash || u.username || u.password)
    return undefined
  return u.href.replace(/\/+$/, "")
}

/**
 * At most `max` HTTP connections are served: the requests of a connection accepted beyond it
 * answer 503 CM_ERR_BUSY (Retry-After) and the connection is closed, while the cap is still
 * exceeded. Beyond twice the cap Node closes new connections at once, unanswered, so a flood of
 * half-open sockets cannot take every file descriptor (the data tier's included).
 */
function capConnections(app: FastifyInstance, max: number, metrics: AppOptions["metrics"]) {
  let connections = 0
  const over = new WeakSet<Socket>()
  app.server.maxConnections = 2 * max
  app.server.on("connection", (socket: Socket) => {
    if (++connections > max) over.add(socket)
    socket.once("close", () => connections--)
  })
  app.addHook("onRequest", async (req, reply) => {
    const socket = req.raw.socket
    if (!socket || !over.has(socket)) return
    if (connections <= max) return void over.delete(socket)
    metrics.httpShed.inc({ reason: "connections" })
    reply.header("connection", "close")
    throw errors.CM_ERR_BUSY(`the bridge serves at most ${max} HTTP connections at once`)
  })
}

/** The URL of the address a server listens on; an unspecified one (0.0.0.0, ::) as localhost. */
function listenUrl(app: FastifyInstance): string | undefined {
  const a = app.server.address()
  if (!a || typeof a === "string") return undefined
  const host =
    a.address === "0.0.0.0" || a.address === "::" ? "localhost" : a.family === "IPv6" ? `[${a.address}]` : a.address
  return `http://${host}:${a.port}`
}

export function buildApp(o: AppOptions): FastifyInstance {
  const logging = o.logger
    ? { logger: o.logger }
    : {
        loggerInstance: (o.log ?? createLogger("citymeter-api")) as FastifyBaseLogger,
        logController: new LogController({ disableRequestLogging: true }),
      }
  const limits: HttpLimits = { ...BRIDGE_DEFAULTS.http, ...o.httpLimits }
  const app = Fastify({
    ...logging,
    // slow clients: a connection idle either way (a reader that stopped reading), headers or a
    // request sent too slowly, and idle keep-alive connections are closed; Node checks each second
    connectionTimeout: limits.idleTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    http: { headersTimeout: limits.headersTimeoutMs, connectionsCheckingInterval: 1000 },
    // a request id no client chooses: in the X-Request-Id header of every answer, in the body of a
    // 5xx, and on the log line that tells what went wrong (routes/error-handler.ts)
    genReqId: () => randomUUID(),
    // a path parameter may be as long as its schema allows (an NGSI-LD entity id: a URN around a
    // 64-character meter id); fastify's default of 100 refused valid ids before validation
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    bodyLimit: BODY_LIMIT,
    frameworkErrors,
    // Validate as sent: no type coercion (a body's "12" is not 12; query strings are read by
    // readQueryTypes) and unknown keys are refused, not silently removed.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false } },
  })
  installErrorHandling(app)
  capConnections(app, limits.maxConnections, o.metrics)
  app.addHook("preValidation", readQueryTypes)

  void app.register(swagger, {
    openapi: {
      openapi: "3.0.3",
      info: {
        title: "citymeter",
        version: VERSION,
        description:
          "Open data API of the citymeter data tier: meters, interval readings, consumption, alarms. " +
          "Reads are open; writes, downlinks, the meter registry and dead letters need a bearer token " +
          "(API_TOKEN). Every error is {error: CM_ERR_…, message} (a 5xx also has requestId, the X-Request-Id " +
          "under which the bridge logged it); under /ngsi-ld/ the same as NGSI-LD ProblemDetails.",
      },
      components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
    },
  })

  const publicUrl = o.publicUrl === undefined ? undefined : publicBaseUrl(o.publicUrl)
  if (o.publicUrl !== undefined && publicUrl === undefined)
    throw new Error(`PUBLIC_URL must be an absolute http(s) URL without query or fragment (got '${o.publicUrl}')`)
  const tokens: ApiTokens = { ...o.apiTokens, all: o.apiToken }
  const reads = { ...BRIDGE_DEFAULTS.reads, ...o.reads }
  const ctx: RouteContext = {
    store: markStoreErrors(o.store),
    metrics: o.metrics,
    downlink: o.downlink,
    ingestHealth: o.ingestHealth,
    live: o.live,
    exportLicense: o.exportLicense,
    reads,
    publicUrl: () => publicUrl ?? listenUrl(app) ?? DEFAULT_PUBLIC_URL,
    limits,
    releases: {
      publicKey: o.releasePublicKey === undefined ? undefined : releasePublicKey(o.releasePublicKey),
      maxBytes: o.releaseMaxBytes ?? BRIDGE_DEFAULTS.releaseMaxBytes,
      boards: o.releaseBoards ?? repoBoards(),
    },
    wssk: o.wssk,
    requireScope: Object.fromEntries(SCOPES.map((s) => [s, requireScope(tokens, s)])) as RouteContext["requireScope"],
  }
  // reads are open data unless a read token is configured
  if (readsGuarded(tokens))
    app.addHook("onRequest", async (req, reply) => {
      if (req.method !== "GET" && req.method !== "HEAD") return
      const path = req.url.split("?")[0]
      if (OPEN_PATHS.has(path) || isPagePath(path)) return
      await ctx.requireScope.read.call(app, req, reply)
    })
  // after the read token's check: a refused request takes no turn
  installReadGates(
    app,
    readGates({
      reads: { concurrency: reads.concurrency, queue: reads.queue },
      exports: { concurrency: reads.exportConcurrency, queue: reads.exportConcurrency },
    }),
    o.metrics,
  )
  // registered after swagger, so swagger sees every route
  for (const routes of [
    opsRoutes,
    meterRoutes,
    readingRoutes,
    alarmRoutes,
    downlinkRoutes,
    deadLetterRoutes,
    sensorThingsRoutes,
    ngsiLdRoutes,
    exportRoutes,
    locationRoutes,
    alarmAckRoutes,
    releaseRoutes,
    rolloutRoutes,
    dmaRoutes,
    dmaLossRoutes,
    deviceLogRoutes,
    liveRoutes,
    dashboardRoutes,
  ])
    if (!o.probesOnly || routes === opsRoutes) void app.register(routes, ctx)

  return app
}
