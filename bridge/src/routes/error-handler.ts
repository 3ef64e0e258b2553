// Every failure the API answers, in one shape { error: "CM_ERR_…", message } (bridge/src/errors.ts):
// our own errors, schema validation, fastify's body and URL errors (FST_ERR_*), unknown routes and
// methods, a data tier that is down (503) and bugs (500, details only in the log). Every answer
// carries its request id in X-Request-Id; a 5xx also in its body (requestId) and on a log line of
// the app's logger with that id, whether or not request logging is on.
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify"
import { ApiError, errors } from "../errors.js"
import { isTransientStoreError } from "../store/errors.js"
import type { Store } from "../store/store.js"
import { METER_ID_PATTERN, METER_ID_RULE } from "../topics.js"
import { problemDetails, wantsProblem } from "./problem.js"
import { NOTE_PATTERN, TEXT_PATTERN } from "./shared.js"

const FROM_STORE = Symbol("citymeter.fromStore")

/**
 * The store as the routes see it: every error it throws is marked as coming from the data tier, so
 * the error handler can tell a data tier that is down (503, isTransientStoreError) from a bug
 * (500). Without the mark, any error lacking a SQLSTATE would look like a lost connection.
 */
export function markStoreErrors(store: Store): Store {
  const mark = (e: unknown) => {
    if (e !== null && typeof e === "object" && Object.isExtensible(e))
      Object.defineProperty(e, FROM_STORE, { value: true })
    return e
  }
  return new Proxy(store, {
    get(target, key) {
      const value: unknown = Reflect.get(target, key, target)
      if (typeof value !== "function") return value
      return (...args: unknown[]) => {
        try {
          const result: unknown = value.apply(target, args)
          // a stream of batches (exportLines): its errors are marked as it goes; return() reaches it
          if (result !== null && typeof result === "object" && Symbol.asyncIterator in result)
            return (async function* () {
              try {
                return yield* result as AsyncGenerator<unknown>
              } catch (e) {
                throw mark(e)
              }
            })()
          return Promise.resolve(result).catch((e: unknown) => {
            throw mark(e)
          })
        } catch (e) {
          throw mark(e)
        }
      }
    },
  })
}

const fromStore = (e: unknown) => e !== null && typeof e === "object" && FROM_STORE in e

type ValidationError = FastifyError & {
  validation?: { keyword: string; instancePath: string; params: Record<string, unknown> }[]
  validationContext?: string
}

/** Schema validation failures: unknown keys have their own code; a bad meter id quotes the rule. */
function validationError(err: ValidationError): ApiError {
  const v = err.validation?.[0]
  const where = err.validationContext ?? "request"
  if (v?.keyword === "additionalProperties")
    return errors.CM_ERR_UNKNOWN_KEY(where, String(v.params.additionalProperty))
  if (v?.keyword === "enum" && Array.isArray(v.params.allowedValues))
    return errors.CM_ERR_BAD_REQUEST(
      `${where}${v.instancePath} must be one of: ${v.params.allowedValues.map(String).join(", ")}`,
    )
  if (v?.keyword === "pattern" && v.params.pattern === METER_ID_PATTERN.source)
    return errors.CM_ERR_BAD_REQUEST(`${where}${v.instancePath} must be a meter id: ${METER_ID_RULE}`)
  if (v?.keyword === "pattern" && (v.params.pattern === TEXT_PATTERN || v.params.pattern === NOTE_PATTERN))
    return errors.CM_ERR_BAD_REQUEST(`${where}${v.instancePath} must not contain control characters (NUL, …)`)
  return errors.CM_ERR_BAD_REQUEST(err.message)
}

/** SQLSTATE query_canceled: PostgreSQL's statement_timeout, and the embedded engine's read budget (pglite-thread.ts). */
const STATEMENT_TIMEOUT = "57014"
/** SQLSTATE statement_too_complex: a read the planner costs above READ_MAX_COST (store/db.ts ReadCostError). */
const STATEMENT_TOO_COMPLEX = "54001"

/** The answer to any error a request ends with. */
export function toApiError(err: unknown, req: FastifyRequest): ApiError {
  if (err instanceof ApiError) return err
  if (fromStore(err)) {
    const { code, message } = err as { code?: unknown; message?: unknown }
    if (code === STATEMENT_TOO_COMPLEX) return errors.CM_ERR_READ_BUDGET(String(message))
    if (code === STATEMENT_TIMEOUT)
      return errors.CM_ERR_READ_BUDGET(
        "a statement ran past READ_STATEMENT_MS: ask for fewer rows (a smaller $top or limit, a shorter time range), " +
          "a narrower $filter, or follow @iot.nextLink page by page",
      )
    return isTransientStoreError(err) ? errors.CM_ERR_STORE_DOWN("retry later") : errors.CM_ERR_INTERNAL(req.id)
  }
  const e = err as ValidationError
  if (e?.validation) return validationError(e)
  switch (e?.code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return errors.CM_ERR_BODY_TOO_LARGE(req.routeOptions.bodyLimit ?? "the limit")
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return errors.CM_ERR_UNSUPPORTED_MEDIA_TYPE(req.headers["content-type"] ?? "")
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return errors.CM_ERR_BAD_JSON("it is empty")
    case "FST_ERR_CTP_INVALID_JSON_BODY":
      return errors.CM_ERR_BAD_JSON("it does not parse")
  }
  const status = e?.statusCode ?? 500
  if (status >= 400 && status < 500) return errors.CM_ERR_BAD_REQUEST(e.message)
  return errors.CM_ERR_INTERNAL(req.id)
}

/** The headers and status that go with an error, whatever shape its body takes. */
export function errorReply(reply: FastifyReply, e: ApiError): FastifyReply {
  reply.header("x-request-id", reply.request.id)
  if (e.code === errors.CM_ERR_UNAUTHORIZED.code) reply.header("www-authenticate", 'Bearer realm="citymeter"')
  if (
    e.code === errors.CM_ERR_STORE_DOWN.code ||
    e.code === errors.CM_ERR_BUSY.code ||
    e.code === errors.CM_ERR_DEVICE_LOG_BUSY.code
  )
    reply.header("retry-after", "5")
  return reply.status(e.statusCode)
}

/** Requests whose server error is logged already (with its cause), so onResponse does not log it again. */
const logged = new WeakSet<FastifyRequest>()

/** Logs the server error a request answers with, its cause included (which never goes to the client). */
export function logServerError(req: FastifyRequest, e: ApiError, err: unknown) {
  logged.add(req)
  // a bug is an error; a data tier that is down or a shed request is a warning
  req.log[e.statusCode === 500 ? "error" : "warn"](
    { err, code: e.code, method: req.method, url: req.url, statusCode: e.statusCode },
    `request failed: ${e.code}`,
  )
}

/** The answer to an error a request ended with; a server error's details go to the log only. */
export function failedRequest(err: unknown, req: FastifyRequest): ApiError {
  const e = toApiError(err, req)
  if (e.statusCode >= 500) logServerError(req, e, err)
  return e
}

/** The request id in a body: a server error's, for the operator to find its log line. */
export const requestIdOf = (req: FastifyRequest, e: ApiError) => (e.statusCode >= 500 ? { requestId: req.id } : {})

/** An error answer: { error, message } (and requestId on a 5xx), as ProblemDetails under /ngsi-ld/. */
function send(reply: FastifyReply, e: ApiError) {
  const body = { error: e.code, message: e.message, ...requestIdOf(reply.request, e) }
  errorReply(reply, e)
  if (wantsProblem(reply.request)) return reply.type("application/json").send(problemDetails(e, body))
  return reply.send(body)
}

/**
 * fastify's `frameworkErrors` option: errors it meets before routing (a malformed percent escape, a
 * parameter longer than maxParamLength) would otherwise answer in fastify's own shape.
 */
export function frameworkErrors(err: FastifyError, req: FastifyRequest, reply: FastifyReply) {
  return send(reply, errors.CM_ERR_BAD_REQUEST(err.message))
}

/** A route pattern (/meters/:id, /sta/v1.1/*) as a regular expression over request paths. */
function routeRegExp(url: string): RegExp {
  const escape = (s: string) => s.replace(/[.+?^${}()|[\]\\]/g, "\\$&")
  const parts = url.split("/").map((seg) => (seg.startsWith(":") ? "[^/]+" : seg === "*" ? ".*" : escape(seg)))
  return new RegExp(`^${parts.join("/")}$`)
}

/**
 * Installs the error handler, the not-found handler (404, or 405 with Allow when the path exists
 * with other methods) and the route table the latter needs. Call before any route is registered.
 */
export function installErrorHandling(app: FastifyInstance) {
  app.addHook("onRequest", async (req, reply) => {
    reply.header("x-request-id", req.id)
  })
  // a 5xx answered without going through the error handler (a route's own 503) is logged too
  app.addHook("onResponse", async (req, reply) => {
    if (reply.statusCode >= 500 && !logged.has(req))
      req.log.warn(
        { method: req.method, url: req.url, statusCode: reply.statusCode },
        "request answered with a server error",
      )
  })
  const routes = new Map<string, { re: RegExp; methods: Set<string> }>()
  app.addHook("onRoute", (r) => {
    const entry = routes.get(r.url) ?? { re: routeRegExp(r.url), methods: new Set<string>() }
    for (const m of [r.method].flat()) entry.methods.add(m)
    routes.set(r.url, entry)
  })

  app.setNotFoundHandler((req, reply) => {
    const path = req.url.split("?")[0]
    const allowed = new Set<string>()
    for (const { re, methods } of routes.values()) if (re.test(path)) for (const m of methods) allowed.add(m)
    if (allowed.size === 0) return send(reply, errors.CM_ERR_NOT_FOUND(`route ${req.method} ${path}`))
    const allow = [...allowed].sort().join(", ")
    reply.header("allow", allow)
    return send(reply, errors.CM_ERR_METHOD_NOT_ALLOWED(req.method, path, allow))
  })

  app.setErrorHandler((err, req, reply) => {
    return send(reply, failedRequest(err, req))
  })
}
