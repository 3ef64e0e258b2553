// HTTP API over the data tier. buildApp never listens (tests use app.inject); service.ts does.
// Reads are open (city open data); writes and downlinks need `Authorization: Bearer <API_TOKEN>`.
// The OpenAPI description is generated from the route schemas and served at /openapi.json.
import { createHash, timingSafeEqual } from "node:crypto"
import swagger from "@fastify/swagger"
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify"
import { MAX_INTERVALS, MAX_INTERVAL_S, encodeDownlink } from "./codec.js"
import type { Metrics } from "./metrics.js"
import { registerSensorThings } from "./sensorthings.js"
import { BUCKETS, type AlarmRow, type Bucket, type MeterRow, type ReadingRow, type Store } from "./store/store.js"
import { METER_ID_PATTERN, type DownKind } from "./topics.js"

export type Downlink = (meterId: string, kind: DownKind, payload: Uint8Array) => Promise<void>

export interface AppOptions {
  store: Store
  metrics: Metrics
  logger?: boolean | object
  /** Sends a downlink to a meter (service.ts wires the bridge's MQTT client). */
  downlink?: Downlink
  /** Bearer token for writes and downlinks; without one, writes are refused. */
  apiToken?: string
}

const meterJson = (m: MeterRow) => ({
  meterId: m.meterId,
  online: m.online,
  inactive: m.inactive,
  firstSeen: m.firstSeen.toISOString(),
  lastSeen: m.lastSeen.toISOString(),
  firmware: m.firmware,
  board: m.board,
  boot: m.boot,
  intervalS: m.intervalS,
  batch: m.batch,
})

const readingJson = ({ meterId: _m, ts, ...r }: ReadingRow) => ({ ts: ts.toISOString(), ...r })
const alarmJson = (a: AlarmRow) => ({ ...a, ts: a.ts.toISOString() })

/** CSV columns of a reading export, in order (RFC 4180; no field needs quoting). */
export const CSV_COLUMNS = [
  "meterId",
  "ts",
  "intervalS",
  "boot",
  "seq",
  "idx",
  "volumeMl",
  "reverseMl",
  "waterTotalMl",
  "energyWh",
  "energyTotalWh",
  "powerW",
  "voltageDv",
  "pressureMinPa",
  "pressureAvgPa",
  "pressureMaxPa",
  "timeSynced",
  "backfill",
] as const satisfies readonly (keyof ReadingRow)[]

function readingsCsv(rows: ReadingRow[]): string {
  const cell = (v: unknown) => (v === null || v === undefined ? "" : v instanceof Date ? v.toISOString() : String(v))
  const lines = [CSV_COLUMNS.join(",")]
  for (const r of rows) lines.push(CSV_COLUMNS.map((c) => cell(r[c])).join(","))
  return lines.join("\r\n") + "\r\n"
}

const badQuery = (message: string) => Object.assign(new Error(message), { statusCode: 400, code: "CM_ERR_BAD_QUERY" })

function parseTime(v: unknown, name: string): Date | undefined {
  if (v === undefined || v === "") return undefined
  const d = new Date(String(v))
  if (Number.isNaN(d.getTime())) throw badQuery(`${name} must be an ISO 8601 time`)
  return d
}

function parseRange(q: { from?: string; to?: string }) {
  const from = parseTime(q.from, "from")
  const to = parseTime(q.to, "to")
  if (from && to && from.getTime() >= to.getTime()) throw badQuery("from must be before to")
  return { from, to }
}

function checkTimeZone(tz: string | undefined) {
  if (tz === undefined) return undefined
  try {
    new Intl.DateTimeFormat("en", { timeZone: tz })
  } catch {
    throw badQuery(`unknown time zone ${tz}`)
  }
  return tz
}

const DOWNLINK_TIMEOUT_MS = 10_000

const sha = (s: string) => createHash("sha256").update(s).digest()

/** Config downlink fields (proto Config), all uint32; intervalS and batch are bounded by the codec. */
const CONFIG_FIELDS = [
  "intervalS",
  "batch",
  "leakS",
  "burstMlMin",
  "backflowMl",
  "noFlowS",
  "pressureLowPa",
  "pressureHighPa",
  "undervoltageDv",
  "supplyLossDv",
  "pulsesPerL",
  "impPerKwh",
] as const
const UINT32 = { type: "integer", minimum: 0, maximum: 0xffffffff } as const

const meterParam = {
  type: "object",
  properties: { id: { type: "string", pattern: METER_ID_PATTERN.source } },
  required: ["id"],
} as const

const rangeProps = {
  from: { type: "string", description: "ISO 8601 time, inclusive" },
  to: { type: "string", description: "ISO 8601 time, exclusive" },
} as const

const errorSchema = {
  type: "object",
  properties: { error: { type: "string" }, message: { type: "string" } },
} as const

export function buildApp(o: AppOptions): FastifyInstance {
  // Reject unknown body fields instead of silently dropping them (fastify's default removes them).
  const app = Fastify({ logger: o.logger ?? false, ajv: { customOptions: { removeAdditional: false } } })
  const { store, metrics } = o

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _req, reply) => {
    const status = err.statusCode ?? 500
    const code =
      status >= 500 ? "CM_ERR_INTERNAL" : err.code?.startsWith("FST_ERR_VALIDATION") ? "CM_ERR_BAD_REQUEST" : err.code
    reply.status(status).send({ error: code ?? "CM_ERR_BAD_REQUEST", message: err.message })
  })

  void app.register(swagger, {
    openapi: {
      openapi: "3.0.3",
      info: {
        title: "citymeter",
        version: "1.0.0",
        description:
          "Open data API of the citymeter data tier: meters, interval readings, consumption, alarms. " +
          "Reads are open; writes and downlinks need a bearer token (API_TOKEN).",
      },
      components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
    },
  })

  const expected = o.apiToken ? sha(o.apiToken) : undefined
  /** preHandler of every route that writes or sends a downlink. */
  const requireToken = async (req: FastifyRequest, reply: FastifyReply) => {
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")
    if (!expected)
      return reply
        .status(401)
        .send({ error: "CM_ERR_UNAUTHORIZED", message: "writes are disabled: API_TOKEN is not set" })
    if (!m || !timingSafeEqual(sha(m[1]), expected))
      return reply.status(401).send({ error: "CM_ERR_UNAUTHORIZED", message: "missing or wrong bearer token" })
  }

  const notFound = (reply: FastifyReply, id: string) =>
    reply.status(404).send({ error: "CM_ERR_NOT_FOUND", message: `no meter ${id}` })

  // Routes in a plugin registered after swagger, so swagger sees them all.
  void app.register(async (api) => {
    api.get("/openapi.json", { schema: { hide: true } }, async () => api.swagger())

    api.get("/healthz", { schema: { tags: ["ops"], summary: "Liveness" } }, async () => ({ ok: true }))
    api.get(
      "/readyz",
      { schema: { tags: ["ops"], summary: "Readiness: the data tier answers" } },
      async (_r, reply) => {
        try {
          await store.ping()
          return { ok: true, engine: store.engine }
        } catch (e) {
          return reply.status(503).send({ ok: false, error: "CM_ERR_STORE_DOWN", message: (e as Error).message })
        }
      },
    )
    api.get("/metrics", { schema: { tags: ["ops"], summary: "Prometheus metrics" } }, async (_req, reply) => {
      reply.header("content-type", metrics.registry.contentType)
      return metrics.registry.metrics()
    })

    api.get(
      "/meters",
      {
        schema: {
          tags: ["meters"],
          summary: "Every meter with its status (online, inactive, last seen, firmware, boot)",
        },
      },
      async () => ({ meters: (await store.listMeters()).map(meterJson) }),
    )

    api.get<{ Params: { id: string } }>(
      "/meters/:id",
      {
        schema: { tags: ["meters"], summary: "One meter's status", params: meterParam, response: { 404: errorSchema } },
      },
      async (req, reply) => {
        const m = await store.getMeter(req.params.id)
        return m ? meterJson(m) : notFound(reply, req.params.id)
      },
    )

    api.get<{ Params: { id: string }; Querystring: { from?: string; to?: string; limit?: number; format?: string } }>(
      "/meters/:id/readings",
      {
        schema: {
          tags: ["readings"],
          summary: "Interval readings in a time range (JSON, or CSV with format=csv)",
          params: meterParam,
          querystring: {
            type: "object",
            properties: {
              ...rangeProps,
              limit: { type: "integer", minimum: 1, maximum: 100000 },
              format: { type: "string", enum: ["json", "csv"] },
            },
          },
        },
      },
      async (req, reply) => {
        const { from, to } = parseRange(req.query)
        if (!(await store.getMeter(req.params.id))) return notFound(reply, req.params.id)
        const rows = await store.readings(req.params.id, { from, to, limit: req.query.limit })
        if (req.query.format === "csv")
          return reply
            .header("content-type", "text/csv; charset=utf-8")
            .header("content-disposition", `attachment; filename="${req.params.id}-readings.csv"`)
            .send(readingsCsv(rows))
        return { meterId: req.params.id, readings: rows.map(readingJson) }
      },
    )

    api.get<{ Params: { id: string }; Querystring: { bucket: Bucket; from?: string; to?: string; tz?: string } }>(
      "/meters/:id/consumption",
      {
        schema: {
          tags: ["readings"],
          summary: "Water and energy consumed per bucket, from cumulative totals",
          description:
            "Each interval consumes its total minus the previous interval's total; the first reading, a total " +
            "that went down (meter replaced) or missing totals fall back to the interval volume. After a gap, the " +
            "whole difference (the gap's consumption) goes to the bucket where data resumes, flagged gap=true. " +
            "Intervals are bucketed by their start time.",
          params: meterParam,
          querystring: {
            type: "object",
            properties: {
              ...rangeProps,
              bucket: { type: "string", enum: [...BUCKETS] },
              tz: { type: "string", description: "IANA time zone for hour/day/month boundaries (default UTC)" },
            },
            required: ["bucket"],
          },
        },
      },
      async (req, reply) => {
        const { from, to } = parseRange(req.query)
        const tz = checkTimeZone(req.query.tz)
        if (!(await store.getMeter(req.params.id))) return notFound(reply, req.params.id)
        const rows = await store.consumption(req.params.id, { bucket: req.query.bucket, from, to, tz })
        return {
          meterId: req.params.id,
          bucket: req.query.bucket,
          tz: tz ?? "UTC",
          consumption: rows.map((r) => ({ ...r, start: r.start.toISOString() })),
        }
      },
    )

    api.get<{ Querystring: { after?: string; limit?: number } }>(
      "/readings/latest",
      {
        schema: {
          tags: ["readings"],
          summary: "The newest reading of every meter (one row per meter; keyset pages with after/next)",
          querystring: {
            type: "object",
            properties: {
              after: { type: "string", pattern: METER_ID_PATTERN.source },
              limit: { type: "integer", minimum: 1, maximum: 200000, default: 200000 },
            },
          },
        },
      },
      async (req, reply) => {
        const limit = req.query.limit ?? 200000
        // serialised by the engine: one string instead of 100k objects parsed and stringified
        const { json, count, last } = await store.latestJson({ after: req.query.after, limit })
        return reply
          .header("content-type", "application/json; charset=utf-8")
          .send(`{"readings":${json},"next":${JSON.stringify(count === limit ? last : null)}}`)
      },
    )

    const alarmQuery = {
      type: "object",
      properties: {
        ...rangeProps,
        open: { type: "boolean", description: "only alarms raised without a later clear of the same type" },
        limit: { type: "integer", minimum: 1, maximum: 100000 },
      },
    } as const
    type AlarmQs = { open?: boolean; from?: string; to?: string; limit?: number }
    const alarmsFor = async (meterId: string | undefined, q: AlarmQs) => {
      const { from, to } = parseRange(q)
      const rows = await store.alarms({ meterId, open: q.open, from, to, limit: q.limit })
      return rows.map(alarmJson)
    }

    api.get<{ Querystring: AlarmQs & { meter?: string } }>(
      "/alarms",
      {
        schema: {
          tags: ["alarms"],
          summary: "Alarm edges of the fleet (history), or open alarms with open=true",
          querystring: {
            ...alarmQuery,
            properties: { ...alarmQuery.properties, meter: { type: "string", pattern: METER_ID_PATTERN.source } },
          },
        },
      },
      async (req) => ({ alarms: await alarmsFor(req.query.meter, req.query) }),
    )

    api.get<{ Params: { id: string }; Querystring: AlarmQs }>(
      "/meters/:id/alarms",
      { schema: { tags: ["alarms"], summary: "One meter's alarms", params: meterParam, querystring: alarmQuery } },
      async (req) => ({ meterId: req.params.id, alarms: await alarmsFor(req.params.id, req.query) }),
    )

    api.get<{ Querystring: { limit?: number } }>(
      "/dead-letters",
      {
        schema: {
          tags: ["ops"],
          summary: "Rejected uplinks, newest first",
          querystring: { type: "object", properties: { limit: { type: "integer", minimum: 1, maximum: 10000 } } },
        },
      },
      async (req) => ({
        deadLetters: (await store.deadLetters(req.query.limit ?? 100)).map((d) => ({
          ...d,
          receivedAt: d.receivedAt.toISOString(),
          payload: Buffer.from(d.payload).toString("hex"),
        })),
      }),
    )

    /** Sends one downlink to a known meter; 202 once the broker has it (QoS 1). */
    const send = async (reply: FastifyReply, meterId: string, kind: DownKind, payload: Uint8Array) => {
      if (!o.downlink)
        return reply.status(503).send({ error: "CM_ERR_NO_DOWNLINK", message: "this instance sends no downlinks" })
      if (!(await store.getMeter(meterId))) return notFound(reply, meterId)
      // QoS 1: resolves on the broker's PUBACK; a broker that is away must not hold the request forever
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise<false>((r) => (timer = setTimeout(() => r(false), DOWNLINK_TIMEOUT_MS)))
      const sent = await Promise.race([o.downlink(meterId, kind, payload).then(() => true), timeout])
      clearTimeout(timer)
      if (!sent)
        return reply
          .status(504)
          .send({ error: "CM_ERR_DOWNLINK_TIMEOUT", message: "the broker did not take the downlink in time" })
      return reply.status(202).send({ meterId, sent: kind })
    }

    api.post<{ Params: { id: string }; Body: Partial<Record<(typeof CONFIG_FIELDS)[number], number>> }>(
      "/meters/:id/config",
      {
        preHandler: requireToken,
        schema: {
          tags: ["downlinks"],
          summary: "Send a Config downlink (interval, batch, alarm thresholds)",
          security: [{ bearer: [] }],
          params: meterParam,
          body: {
            type: "object",
            additionalProperties: false,
            minProperties: 1,
            properties: {
              ...Object.fromEntries(CONFIG_FIELDS.map((f) => [f, UINT32])),
              intervalS: { type: "integer", minimum: 1, maximum: MAX_INTERVAL_S },
              batch: { type: "integer", minimum: 1, maximum: MAX_INTERVALS },
            },
          },
        },
      },
      async (req, reply) => send(reply, req.params.id, "config", encodeDownlink({ config: req.body })),
    )

    api.post<{ Params: { id: string }; Body: { boot: number; fromSeq: number } }>(
      "/meters/:id/resend",
      {
        preHandler: requireToken,
        schema: {
          tags: ["downlinks"],
          summary: "Ask a meter to send again every frame from (boot, fromSeq) on",
          security: [{ bearer: [] }],
          params: meterParam,
          body: {
            type: "object",
            additionalProperties: false,
            required: ["boot", "fromSeq"],
            properties: { boot: UINT32, fromSeq: UINT32 },
          },
        },
      },
      async (req, reply) => send(reply, req.params.id, "resend", encodeDownlink({ resend: req.body })),
    )

    registerSensorThings(api, store)
  })

  return app
}
