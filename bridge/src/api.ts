// HTTP API over the data tier. buildApp never listens (tests use app.inject); server.ts does.
import Fastify, { type FastifyInstance } from "fastify"
import type { Metrics } from "./metrics.js"
import type { MeterRow, ReadingRow, Store } from "./store/store.js"
import { METER_ID_PATTERN } from "./topics.js"

export interface AppOptions {
  store: Store
  metrics: Metrics
  logger?: boolean | object
}

const meterJson = (m: MeterRow) => ({
  meterId: m.meterId,
  online: m.online,
  firstSeen: m.firstSeen.toISOString(),
  lastSeen: m.lastSeen.toISOString(),
  firmware: m.firmware,
  board: m.board,
  boot: m.boot,
  intervalS: m.intervalS,
  batch: m.batch,
})

const readingJson = ({ meterId: _m, ts, ...r }: ReadingRow) => ({ ts: ts.toISOString(), ...r })

function parseTime(v: unknown, name: string): Date | undefined {
  if (v === undefined || v === "") return undefined
  const d = new Date(String(v))
  if (Number.isNaN(d.getTime()))
    throw Object.assign(new Error(`${name} must be an ISO 8601 time`), { statusCode: 400, code: "CM_ERR_BAD_QUERY" })
  return d
}

export function buildApp(o: AppOptions): FastifyInstance {
  const app = Fastify({ logger: o.logger ?? false })
  const { store, metrics } = o

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _req, reply) => {
    const status = err.statusCode ?? 500
    reply
      .status(status)
      .send({ error: status >= 500 ? "CM_ERR_INTERNAL" : (err.code ?? "CM_ERR_BAD_REQUEST"), message: err.message })
  })

  const meterParam = {
    type: "object",
    properties: { id: { type: "string", pattern: METER_ID_PATTERN.source } },
    required: ["id"],
  } as const

  app.get("/healthz", async () => ({ ok: true }))
  app.get("/readyz", async (_req, reply) => {
    try {
      await store.ping()
      return { ok: true, engine: store.engine }
    } catch (e) {
      return reply.status(503).send({ ok: false, error: "CM_ERR_STORE_DOWN", message: (e as Error).message })
    }
  })
  app.get("/metrics", async (_req, reply) => {
    reply.header("content-type", metrics.registry.contentType)
    return metrics.registry.metrics()
  })

  app.get("/meters", async () => ({ meters: (await store.listMeters()).map(meterJson) }))

  app.get<{ Params: { id: string } }>("/meters/:id", { schema: { params: meterParam } }, async (req, reply) => {
    const m = await store.getMeter(req.params.id)
    if (!m) return reply.status(404).send({ error: "CM_ERR_NOT_FOUND", message: `no meter ${req.params.id}` })
    return meterJson(m)
  })

  app.get<{ Params: { id: string }; Querystring: { from?: string; to?: string; limit?: number } }>(
    "/meters/:id/readings",
    {
      schema: {
        params: meterParam,
        querystring: {
          type: "object",
          properties: {
            from: { type: "string" },
            to: { type: "string" },
            limit: { type: "integer", minimum: 1, maximum: 100000 },
          },
        },
      },
    },
    async (req, reply) => {
      const from = parseTime(req.query.from, "from")
      const to = parseTime(req.query.to, "to")
      if (!(await store.getMeter(req.params.id)))
        return reply.status(404).send({ error: "CM_ERR_NOT_FOUND", message: `no meter ${req.params.id}` })
      const rows = await store.readings(req.params.id, { from, to, limit: req.query.limit })
      return { meterId: req.params.id, readings: rows.map(readingJson) }
    },
  )

  app.get<{ Params: { id: string } }>("/meters/:id/alarms", { schema: { params: meterParam } }, async (req) => ({
    meterId: req.params.id,
    alarms: (await store.alarms({ meterId: req.params.id })).map((a) => ({ ...a, ts: a.ts.toISOString() })),
  }))

  app.get<{ Querystring: { limit?: number } }>("/dead-letters", async (req) => ({
    deadLetters: (await store.deadLetters(Number(req.query.limit ?? 100))).map((d) => ({
      ...d,
      receivedAt: d.receivedAt.toISOString(),
      payload: Buffer.from(d.payload).toString("hex"),
    })),
  }))

  return app
}
