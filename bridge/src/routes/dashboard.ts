// The operator's dashboard: the page at / and its assets (web/, built by
// scripts/build-web.ts into web/dist, served from the package, never a CDN), the browsable API at
// /docs (Swagger UI from npm), and the two reads only the page needs: operations figures (the
// same counters as /metrics) and the fleet by district.
import { existsSync } from "node:fs"
import { readFile } from "node:fs/promises"
import { fileURLToPath } from "node:url"
import fastifyStatic from "@fastify/static"
import swaggerUi from "@fastify/swagger-ui"
import type { FastifyInstance } from "fastify"
import { errors, ERROR_RESPONSES } from "../errors.js"
import type { Metrics } from "../metrics.js"
import { strictQuery, type RouteContext } from "./shared.js"
import { parseRange, rangeProps } from "./time.js"

/** Where the page's built files are (gitignored; `npm run build` or `npm run build:web`). */
export const WEB_DIST = fileURLToPath(new URL("../../../web/dist/", import.meta.url))

/** Paths that serve the page, its assets and the API page: static, open like /healthz. */
export const isPagePath = (path: string) => path === "/" || path.startsWith("/ui/") || path.startsWith("/docs")

type Labelled = Record<string, number>

/** The operations figures, read from the same prom-client counters /metrics exposes. */
export async function opsFigures(metrics: Metrics) {
  const byLabel = async (
    c: { get(): Promise<{ values: { labels: Record<string, unknown>; value: number }[] }> },
    label: string,
  ) => {
    const out: Labelled = {}
    for (const v of (await c.get()).values) out[String(v.labels[label] ?? "")] = v.value
    return out
  }
  const total = async (c: { get(): Promise<{ values: { value: number }[] }> }) =>
    (await c.get()).values.reduce((a, v) => a + v.value, 0)
  return {
    at: new Date().toISOString(),
    framesReceived: await byLabel(metrics.framesIn, "kind"),
    framesStored: await byLabel(metrics.framesStored, "kind"),
    readingsStored: await total(metrics.readingsStored),
    duplicates: await total(metrics.framesDuplicate),
    rejected: await byLabel(metrics.framesRejected, "reason"),
    deadLetters: await total(metrics.deadLetters),
    onlineMeters: await total(metrics.onlineMeters),
    stalled: (await total(metrics.stalled)) > 0,
    oldestUnackedS: await total(metrics.oldestUnacked),
  }
}

export async function dashboardRoutes(app: FastifyInstance, { store, metrics }: RouteContext) {
  await app.register(swaggerUi, {
    routePrefix: "/docs",
    // no request leaves the machine: the validator badge would call an online service
    uiConfig: { validatorUrl: null, docExpansion: "list", deepLinking: true },
  })

  if (existsSync(WEB_DIST)) {
    await app.register(fastifyStatic, {
      root: WEB_DIST,
      prefix: "/ui/",
      decorateReply: false,
      schemaHide: true,
    })
    const index = await readFile(`${WEB_DIST}index.html`)
    app.get("/", { schema: { hide: true } }, async (_req, reply) =>
      reply.header("content-type", "text/html; charset=utf-8").header("cache-control", "no-cache").send(index),
    )
  } else {
    app.get("/", { schema: { hide: true } }, async () => {
      throw errors.CM_ERR_NOT_FOUND("dashboard build (web/dist): run `npm run build`")
    })
  }

  app.get(
    "/dashboard/ops",
    {
      schema: {
        tags: ["dashboard"],
        summary: "Operations figures for the dashboard, from the same counters as /metrics",
        description:
          "Counters since this bridge started: frames received (by kind), stored (by kind), readings stored, " +
          "duplicates, rejected frames by reason (citymeter_frames_rejected_total), dead letters kept " +
          "(citymeter_dead_letters), online meters, ingest health. Rates: the difference of two reads over their `at`.",
        response: ERROR_RESPONSES,
      },
    },
    async () => opsFigures(metrics),
  )

  app.get<{ Querystring: { from?: string; to?: string } }>(
    "/districts",
    {
      schema: {
        tags: ["meters"],
        summary: "The fleet by district: meters, online, open alarms, consumption in a time range",
        description:
          "Districts come from the meters' locations (PUT /meters/:id/location); `district: null` groups meters " +
          "without one. Consumption is the sum of interval volumes (waterMl) and energies (energyWh) of readings " +
          "whose ts is in [from, to).",
        querystring: strictQuery(rangeProps),
        response: ERROR_RESPONSES,
      },
    },
    async (req) => {
      const { from, to } = parseRange(req.query)
      return { districts: await store.districts({ from, to }) }
    },
  )
}
