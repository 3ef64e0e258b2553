// The HTTP API's error codes, each declared once with its message template and status, in the
// style of fastify's lib/errors.js (`createError('FST_ERR_NOT_FOUND', 'Not Found', 404)`). Every
// route, SensorThings and the error handler (routes/error-handler.ts) answer with one of these, always in
// the shape { error: "CM_ERR_…", message }. Frame rejection reasons (codec/frames.ts) are another list:
// they name why an uplink was dead-lettered, not why an HTTP request failed.

/** The arguments a message template takes: one per `%s`. */
type TemplateArgs<T extends string> = T extends `${string}%s${infer Rest}`
  ? [string | number, ...TemplateArgs<Rest>]
  : []

/** An error the API answers with: its code, its HTTP status and a message for people. */
export class ApiError extends Error {
  constructor(
    readonly code: string,
    readonly statusCode: number,
    message: string,
  ) {
    super(message)
    this.name = "ApiError"
  }
}

export interface ApiErrorFactory<T extends string> {
  (...args: TemplateArgs<T>): ApiError
  readonly code: string
  readonly statusCode: number
}

/** Declares one error: `createError("CM_ERR_NOT_FOUND", "no %s", 404)("meter m-1")`. */
export function createError<T extends string>(code: string, template: T, statusCode: number): ApiErrorFactory<T> {
  const make = (...args: TemplateArgs<T>) => {
    let i = 0
    return new ApiError(
      code,
      statusCode,
      template.replace(/%s/g, () => String(args[i++])),
    )
  }
  return Object.assign(make, { code, statusCode })
}

export const errors = {
  /** The request does not match its route's schema (type, range, pattern, required field). */
  CM_ERR_BAD_REQUEST: createError("CM_ERR_BAD_REQUEST", "%s", 400),
  /** A query or body key the route does not know: refused, never ignored. */
  CM_ERR_UNKNOWN_KEY: createError("CM_ERR_UNKNOWN_KEY", "unknown %s key '%s'", 400),
  /** A time that is not a calendar date-time, or outside what the data tier holds (routes/time.ts). */
  CM_ERR_BAD_TIME: createError("CM_ERR_BAD_TIME", "%s must be %s (got '%s')", 400),
  /** A well-formed query the route cannot answer: from not before to, unknown time zone. */
  CM_ERR_BAD_QUERY: createError("CM_ERR_BAD_QUERY", "%s", 400),
  /** The body is not JSON, or is empty while its content type says JSON. */
  CM_ERR_BAD_JSON: createError("CM_ERR_BAD_JSON", "the body is not valid JSON: %s", 400),
  CM_ERR_UNAUTHORIZED: createError("CM_ERR_UNAUTHORIZED", "%s", 401),
  /** A Config the meter could not run: pulses past the GPIO polling, a queue over its flash. */
  CM_ERR_CONFIG_REFUSED: createError("CM_ERR_CONFIG_REFUSED", "meter %s cannot take this config: %s", 422),
  CM_ERR_NOT_FOUND: createError("CM_ERR_NOT_FOUND", "no %s", 404),
  /**
   * A read over one of its budgets (BRIDGE_DEFAULTS.reads: rows, entities, bytes, statement time):
   * the message names the limit and how to ask for less (a smaller $top, @iot.nextLink, a narrower $filter).
   */
  CM_ERR_READ_BUDGET: createError("CM_ERR_READ_BUDGET", "over the read budget: %s", 400),
  /** The Accept header names no representation the route has (NGSI-LD: application/json or application/ld+json). */
  CM_ERR_NOT_ACCEPTABLE: createError("CM_ERR_NOT_ACCEPTABLE", "cannot answer in %s: accepted are %s", 406),
  CM_ERR_METHOD_NOT_ALLOWED: createError("CM_ERR_METHOD_NOT_ALLOWED", "%s is not allowed on %s (allowed: %s)", 405),
  CM_ERR_BODY_TOO_LARGE: createError("CM_ERR_BODY_TOO_LARGE", "the body is larger than %s bytes", 413),
  CM_ERR_UNSUPPORTED_MEDIA_TYPE: createError(
    "CM_ERR_UNSUPPORTED_MEDIA_TYPE",
    "unsupported content type '%s': send application/json",
    415,
  ),
  /** Releases (routes/releases.ts, releases.ts): a release without a signature. */
  CM_ERR_RELEASE_UNSIGNED: createError(
    "CM_ERR_RELEASE_UNSIGNED",
    "the release is not signed: sign its manifest with the release key (citymeter release --key)",
    400,
  ),
  /** A signature that does not verify under the bridge's release key (RELEASE_PUBLIC_KEY). */
  CM_ERR_RELEASE_SIGNATURE: createError(
    "CM_ERR_RELEASE_SIGNATURE",
    "the signature does not verify against the manifest under the bridge's release key (id %s)",
    422,
  ),
  /** Bytes whose size or SHA-256 are not the signed manifest's: an altered image. */
  CM_ERR_RELEASE_MISMATCH: createError(
    "CM_ERR_RELEASE_MISMATCH",
    "the bytecode is %s, the signed manifest says %s",
    422,
  ),
  /** A board that is not one of boards/*.board.json. */
  CM_ERR_RELEASE_BOARD: createError("CM_ERR_RELEASE_BOARD", "board '%s' is not one of ours (%s)", 422),
  /** A program size the runtime's deploy refuses (docs/ota-spike.md). */
  CM_ERR_RELEASE_SIZE: createError(
    "CM_ERR_RELEASE_SIZE",
    "%s bytes is not a multiple of %s: the runtime's deploy refuses it",
    422,
  ),
  /** The (board, version) is registered with other bytes. */
  CM_ERR_RELEASE_CONFLICT: createError(
    "CM_ERR_RELEASE_CONFLICT",
    "release %s %s is registered already with other bytes (release %s, sha256 %s)",
    409,
  ),
  /** A release offered to a meter of another board (releases.ts releaseFor). */
  CM_ERR_WRONG_BOARD: createError("CM_ERR_WRONG_BOARD", "meter %s is a %s; release %s is for %s", 409),
  /** Releases need the release public key (RELEASE_PUBLIC_KEY). */
  CM_ERR_NO_RELEASE_KEY: createError(
    "CM_ERR_NO_RELEASE_KEY",
    "this bridge has no release key: set RELEASE_PUBLIC_KEY",
    503,
  ),
  /** A meter is in another rollout that has not ended for it (issue 23: one rollout per meter). */
  CM_ERR_ROLLOUT_CONFLICT: createError(
    "CM_ERR_ROLLOUT_CONFLICT",
    "%s meter(s) are in another rollout that has not ended for them: %s",
    409,
  ),
  /** Pause, resume or cancel of a rollout in a state that does not allow it. */
  CM_ERR_ROLLOUT_STATE: createError("CM_ERR_ROLLOUT_STATE", "rollout %s is %s: it cannot be %s", 409),
  /** A DMA that is another's parent cannot be deleted (issue 25). */
  CM_ERR_DMA_CONFLICT: createError("CM_ERR_DMA_CONFLICT", "DMA %s %s", 409),
  /** A bug: the details are in the bridge's log under the request id, never in the answer. */
  CM_ERR_INTERNAL: createError("CM_ERR_INTERNAL", "internal error (request %s; see the bridge log)", 500),
  /** The data tier does not answer (connection refused or lost, shutting down): retry later. */
  CM_ERR_STORE_DOWN: createError("CM_ERR_STORE_DOWN", "the data tier is unavailable: %s", 503),
  /**
   * Too many expensive reads at once (BRIDGE_DEFAULTS.reads.queue), HTTP connections
   * (HTTP_MAX_CONNECTIONS) or live-event streams (LIVE_MAX_CLIENTS): shed with Retry-After, ingest goes on.
   */
  CM_ERR_BUSY: createError("CM_ERR_BUSY", "%s; try again in a few seconds", 503),
  /** /readyz: ingest holds no subscription, or a frame has waited too long (IngestHealth). */
  CM_ERR_INGEST_STALLED: createError("CM_ERR_INGEST_STALLED", "%s", 503),
  CM_ERR_NO_DOWNLINK: createError("CM_ERR_NO_DOWNLINK", "this instance sends no downlinks", 503),
  /** Routes over meters' WSSK links (the device log, rollouts) in a process without the WSSK endpoint. */
  CM_ERR_NO_WSSK: createError(
    "CM_ERR_NO_WSSK",
    "this bridge process runs no WSSK endpoint (WSSK_PORT): meters link to the process that sets it",
    503,
  ),
  /** The meter's WSSK link is not up here: the message says how to get one (an update window). */
  CM_ERR_NO_LINK: createError(
    "CM_ERR_NO_LINK",
    "meter %s has no WSSK link to this bridge: open one with an update window (POST /meters/%s/update-window) and try again once it is up",
    409,
  ),
  /** A second device log stream of one meter (one per meter; routes/device-log.ts). */
  CM_ERR_DEVICE_LOG_BUSY: createError(
    "CM_ERR_DEVICE_LOG_BUSY",
    "meter %s streams its device log to another client already (one stream per meter); try again when it ends",
    429,
  ),
  CM_ERR_DOWNLINK_TIMEOUT: createError(
    "CM_ERR_DOWNLINK_TIMEOUT",
    "the broker did not take the downlink within %s ms",
    504,
  ),
} as const

export type ErrorCode = keyof typeof errors

/** JSON Schema of every error answer (OpenAPI: the 4xx and 5xx responses of each route). */
export const ERROR_SCHEMA = {
  type: "object",
  required: ["error", "message"],
  properties: {
    error: { type: "string", enum: Object.keys(errors) },
    message: { type: "string" },
    requestId: {
      type: "string",
      description: "5xx only: the request id (also in X-Request-Id) under which the bridge logged the failure",
    },
  },
} as const

/** Response schemas every route shares: its errors. */
export const ERROR_RESPONSES = { "4xx": ERROR_SCHEMA, "5xx": ERROR_SCHEMA } as const
