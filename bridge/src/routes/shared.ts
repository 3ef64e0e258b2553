// What every route plugin receives, and the schema pieces they share.
import type { KeyObject } from "node:crypto"
import type { FastifyRequest, onRequestAsyncHookHandler } from "fastify"
import type { HttpLimits } from "../defaults.js"
import { errors } from "../errors.js"
import type { Scope } from "./auth.js"
import type { IngestHealth } from "../health.js"
import type { LiveBus } from "../live.js"
import type { Metrics } from "../metrics.js"
import type { StaBudgets } from "../sta/budget.js"
import type { Store } from "../store/store.js"
import { METER_ID_PATTERN, type DownKind } from "../topics.js"
import type { WsskEndpoint } from "../wssk/endpoint.js"

export type Downlink = (meterId: string, kind: DownKind, payload: Uint8Array) => Promise<void>

/** The options of every route plugin (api.ts builds them once). */
export interface RouteContext {
  /** The data tier; its errors are marked for the error handler (error-handler.ts). */
  store: Store
  metrics: Metrics
  downlink?: Downlink
  ingestHealth?: () => IngestHealth
  /** What ingest commits, for open dashboards (GET /events); absent: no live events. */
  live?: LiveBus
  /** The licence of the bulk export (routes/export.ts); absent: DEFAULT_EXPORT_LICENSE. */
  exportLicense?: { name: string; url?: string }
  /** The cost limits of one SensorThings answer (READ_MAX_ENTITIES, READ_MAX_BYTES); absent: BRIDGE_DEFAULTS.reads. */
  reads?: StaBudgets
  /**
   * The API's public base URL (PUBLIC_URL, no trailing slash), which every absolute link we
   * publish starts with (SensorThings @iot.selfLink, @iot.nextLink): never the request's Host
   * header, which any client chooses.
   */
  publicUrl: () => string
  /** Caps on what clients hold (defaults.ts BRIDGE_DEFAULTS.http): live-event streams and their buffers. */
  limits: HttpLimits
  /**
   * Releases (routes/releases.ts): the release public key (RELEASE_PUBLIC_KEY; absent: none is
   * registered), the largest bytecode (RELEASE_MAX_BYTES) and the boards a release may be for.
   */
  releases: { publicKey?: KeyObject; maxBytes: number; boards: Set<string> }
  /** Meters' WSSK links (wssk/endpoint.ts); absent: no WSSK_PORT, no link. */
  wssk?: WsskEndpoint
  /** onRequest hooks of the routes that need a scoped bearer token (auth.ts). */
  requireScope: Record<Scope, onRequestAsyncHookHandler>
}

export const meterIdSchema = { type: "string", pattern: METER_ID_PATTERN.source } as const

/**
 * Text a person types (an address, a district, a note): no control characters. PostgreSQL's text
 * refuses NUL, and a CSV row or a log line must stay one line. A note may keep its line breaks.
 */
export const TEXT_PATTERN = "^[^\\x00-\\x1f\\x7f]*$"
export const NOTE_PATTERN = "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]*$"
export const textSchema = (maxLength: number, minLength = 0) =>
  ({ type: "string", minLength, maxLength, pattern: TEXT_PATTERN }) as const

export const meterParam = {
  type: "object",
  properties: { id: meterIdSchema },
  required: ["id"],
} as const

/** A query string schema that refuses keys it does not list. */
export const strictQuery = <P extends Record<string, object>>(properties: P) =>
  ({ type: "object", additionalProperties: false, properties }) as const

/**
 * preValidation hook: reads integer and boolean query values from their text, strictly (decimal
 * digits; true or false). Anything else stays text and fails the schema with a 400. ajv's own
 * coercion is off for the whole API, because it would also turn a JSON body's "12" into 12 and
 * accept limit=1e2 or limit=0x10.
 */
export async function readQueryTypes(req: FastifyRequest) {
  const schema = req.routeOptions.schema?.querystring as { properties?: Record<string, { type?: unknown }> } | undefined
  const props = schema?.properties
  if (!props || req.query === null || typeof req.query !== "object") return
  const query = req.query as Record<string, unknown>
  for (const [key, value] of Object.entries(query)) {
    if (typeof value !== "string" || !Object.hasOwn(props, key)) continue
    const type = props[key].type
    if (type === "integer" && /^-?\d{1,16}$/.test(value)) query[key] = Number(value)
    else if (type === "boolean" && (value === "true" || value === "false")) query[key] = value === "true"
  }
}

/** The meter, or a 404. */
export async function knownMeter(store: Store, meterId: string) {
  const m = await store.getMeter(meterId)
  if (!m) throw errors.CM_ERR_NOT_FOUND(`meter ${meterId}`)
  return m
}

/**
 * The API's name for a proto enum value: without its type prefix (ALARM_TYPE_BURST → BURST,
 * CHANNEL_WATER → WATER), as the README names them. The data tier keeps the proto names.
 */
export const enumLabel = (name: string) => name.replace(/^(ALARM_TYPE|CHANNEL)_/, "")
