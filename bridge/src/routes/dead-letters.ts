// Dead letters: rejected uplinks, newest first, in capped keyset pages, token-guarded. A row carries
// the payload's first 512 bytes, its size and SHA-256 — never the whole payload (one
// open request for 100 dead letters returned 176 MB).
import type { FastifyInstance } from "fastify"
import { ERROR_RESPONSES } from "../errors.js"
import { DEAD_LETTER_HEAD_BYTES, type DeadLetterRow } from "../store/store.js"
import { strictQuery, type RouteContext } from "./shared.js"

export const DEAD_LETTER_PAGE = { default: 100, max: 500 } as const

const deadLetterJson = (d: DeadLetterRow) => ({
  id: d.id,
  receivedAt: d.receivedAt.toISOString(),
  topic: d.topic,
  meterId: d.meterId,
  reason: d.reason,
  detail: d.detail,
  payloadHead: Buffer.from(d.payloadHead).subarray(0, DEAD_LETTER_HEAD_BYTES).toString("hex"),
  payloadBytes: d.payloadBytes,
  payloadSha256: d.payloadSha256,
  storedSha256: d.storedSha256,
})

const deadLetterSchema = {
  type: "object",
  properties: {
    id: { type: "integer" },
    receivedAt: { type: "string", format: "date-time" },
    topic: { type: "string" },
    meterId: { type: ["string", "null"] },
    reason: { type: "string", description: "CM_ERR_* rejection reason" },
    detail: { type: "string" },
    payloadHead: { type: "string", description: `hex of the payload's first ${DEAD_LETTER_HEAD_BYTES} bytes` },
    payloadBytes: { type: "integer", description: "size of the whole payload" },
    payloadSha256: { type: "string", description: "SHA-256 (hex) of the whole payload" },
    storedSha256: {
      type: ["string", "null"],
      description: "a conflict (same frame id, other content): SHA-256 of the content stored first",
    },
  },
} as const

export async function deadLetterRoutes(app: FastifyInstance, { store, requireScope }: RouteContext) {
  app.get<{ Querystring: { limit?: number; before?: number } }>(
    "/dead-letters",
    {
      onRequest: requireScope.ops,
      schema: {
        tags: ["ops"],
        summary: "Rejected uplinks, newest first (keyset pages: pass next as before)",
        security: [{ bearer: [] }],
        querystring: strictQuery({
          limit: { type: "integer", minimum: 1, maximum: DEAD_LETTER_PAGE.max, default: DEAD_LETTER_PAGE.default },
          before: {
            type: "integer",
            minimum: 1,
            maximum: Number.MAX_SAFE_INTEGER,
            description: "only dead letters with an id below this",
          },
        }),
        response: {
          200: {
            type: "object",
            properties: {
              deadLetters: { type: "array", items: deadLetterSchema },
              next: { type: ["integer", "null"], description: "before of the next page; null on the last" },
            },
          },
          ...ERROR_RESPONSES,
        },
      },
    },
    async (req) => {
      const limit = req.query.limit ?? DEAD_LETTER_PAGE.default
      const rows = await store.deadLetters({ beforeId: req.query.before, limit })
      return {
        deadLetters: rows.map(deadLetterJson),
        next: rows.length === limit ? rows[rows.length - 1].id : null,
      }
    },
  )
}
