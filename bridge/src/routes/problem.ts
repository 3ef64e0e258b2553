// NGSI-LD's error form (ETSI GS CIM 009, 5.5.2 and 6.3.6): a ProblemDetails object (IETF RFC 7807:
// type, title, status, detail) sent as application/json, which every answer under /ngsi-ld/ takes,
// fastify's own (a parameter too long, an unknown path, a wrong method) included. It also carries
// the API's { error: CM_ERR_…, message } and, on a 5xx, the request id.
import type { FastifyRequest } from "fastify"
import { errors, type ApiError } from "../errors.js"

/** Every path of the NGSI-LD view starts with this. */
export const NGSI_LD_PREFIX = "/ngsi-ld/"

const ERROR_TYPES: Record<number, string> = {
  400: "BadRequestData",
  404: "ResourceNotFound",
  405: "InvalidRequest",
  406: "InvalidRequest",
}
const errorType = (status: number) =>
  `https://uri.etsi.org/ngsi-ld/errors/${ERROR_TYPES[status] ?? (status >= 500 ? "InternalError" : "BadRequestData")}`

export const PROBLEM_SCHEMA = {
  type: "object",
  required: ["type", "title", "status", "detail", "error", "message"],
  properties: {
    type: { type: "string", description: "NGSI-LD error type URI (ETSI GS CIM 009, 5.5.2)" },
    title: { type: "string" },
    status: { type: "integer", description: "the HTTP status" },
    detail: { type: "string" },
    error: { type: "string", enum: Object.keys(errors) },
    message: { type: "string" },
    requestId: { type: "string", description: "5xx only: the request id under which the bridge logged the failure" },
  },
} as const
export const PROBLEM_RESPONSES = { "4xx": PROBLEM_SCHEMA, "5xx": PROBLEM_SCHEMA } as const

/** Does this request answer its errors as ProblemDetails? */
export const wantsProblem = (req: FastifyRequest) => req.url.startsWith(NGSI_LD_PREFIX)

/** The ProblemDetails body of an error; `extra` is the API's own fields (error, message, requestId). */
export const problemDetails = (e: ApiError, extra: Record<string, unknown>) => ({
  type: errorType(e.statusCode),
  title: e.code,
  status: e.statusCode,
  detail: e.message,
  ...extra,
})
