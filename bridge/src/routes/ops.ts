// Operations: liveness, readiness, Prometheus metrics and the OpenAPI description.
import type { FastifyInstance, FastifyReply } from "fastify"
import { errors, type ApiError } from "../errors.js"
import { logServerError } from "./error-handler.js"
import type { RouteContext } from "./shared.js"

const notReady = (reply: FastifyReply, e: ApiError, extra: object = {}) =>
  reply.status(e.statusCode).send({ ok: false, error: e.code, message: e.message, ...extra })

export async function opsRoutes(app: FastifyInstance, { store, metrics, ingestHealth }: RouteContext) {
  app.get("/openapi.json", { schema: { hide: true } }, async () => app.swagger())

  app.get(
    "/healthz",
    { schema: { tags: ["ops"], summary: "Liveness: the process answers (nothing else is checked)" } },
    async () => ({ ok: true }),
  )

  app.get(
    "/readyz",
    {
      schema: {
        tags: ["ops"],
        summary: "Readiness: the data tier answers and ingest is subscribed and not stalled",
        description:
          "503 with CM_ERR_STORE_DOWN when the data tier does not answer, CM_ERR_INGEST_STALLED when an ingest " +
          "pipeline has lost its subscription or a frame has waited too long (oldestUnackedS).",
      },
    },
    async (req, reply) => {
      try {
        await store.ping()
      } catch (e) {
        // the driver's words (addresses, user names) stay in the log
        const down = errors.CM_ERR_STORE_DOWN("it does not answer (the cause is in the bridge log)")
        logServerError(req, down, e)
        return notReady(reply, down)
      }
      const ingest = ingestHealth?.()
      if (ingest && (!ingest.subscribed || ingest.stalled)) {
        const why =
          ingest.reason ??
          (ingest.subscribed ? `a frame has waited ${ingest.oldestUnackedS} s` : "ingest is not subscribed")
        return notReady(reply, errors.CM_ERR_INGEST_STALLED(why), ingest)
      }
      return { ok: true, engine: store.engine, ...(ingest ? { ingest } : {}) }
    },
  )

  app.get("/metrics", { schema: { tags: ["ops"], summary: "Prometheus metrics" } }, async (_req, reply) => {
    reply.header("content-type", metrics.registry.contentType)
    return metrics.registry.metrics()
  })
}
