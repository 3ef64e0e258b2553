// A DMA's apparent losses and its zone pressure with the Infrastructure Leakage Index (issue 25
// items 4-5), read at each request (store/dma-losses.ts, store/dma-pressure.ts). Their settings,
// which PUT /dmas/:id takes, are in routes/dma-settings.ts.
import type { FastifyInstance } from "fastify"
import { ERROR_RESPONSES, errors } from "../errors.js"
import { APPARENT_LOSS_KINDS } from "../store/dma-store.js"
import { DMA_ID_PATTERN } from "./dmas.js"
import { strictQuery, type RouteContext } from "./shared.js"
import { parseRange, rangeProps } from "./time.js"

/** The most days one apparent-loss or pressure answer covers. */
export const MAX_LOSS_DAYS = 92
const DAY_MS = 86_400_000

const dmaParam = {
  type: "object",
  required: ["id"],
  properties: { id: { type: "string", pattern: DMA_ID_PATTERN } },
} as const

/** [from, to) on whole UTC days, both given, at most MAX_LOSS_DAYS. */
function dayRange(q: { from?: string; to?: string }, what: string) {
  const { from, to } = parseRange(q)
  if (!from || !to) throw errors.CM_ERR_BAD_QUERY(`${what} needs from and to`)
  if (from.getTime() % DAY_MS !== 0 || to.getTime() % DAY_MS !== 0)
    throw errors.CM_ERR_BAD_QUERY(`${what}: from and to lie on whole UTC days`)
  if (to.getTime() - from.getTime() > MAX_LOSS_DAYS * DAY_MS)
    throw errors.CM_ERR_BAD_QUERY(`${what}: at most ${MAX_LOSS_DAYS} days at once`)
  return { from, to }
}

const LOSSES_DOC =
  "Customer meters only, complete UTC days and hours only (every interval stored). stuck: ≥ stuckDays days in a row " +
  "at zero while ≥ stuckNeighbourPct % (and ≥ 2) of the other customers with a complete day consumed. low-flow " +
  "(under-registration): ≥ lowFlowMinHours nonzero hours, none below lowFlowMl, some hours at zero, mean daily use " +
  "≥ lowFlowUsePct % of the DMA's median, while at least half of the other customers so judged do register an hour " +
  "below lowFlowMl. tamper-drop: an ALARM_TYPE_TAMPER or ALARM_TYPE_MAGNETIC_FIELD edge in the period, and the mean " +
  "of the dropDays days after its day ≥ dropPct % below the mean of the baselineDays days before. reverse-flow: " +
  "reverse volume ≥ reverseMl in the period, or an ALARM_TYPE_BACKFLOW raised in it or open when it began. " +
  "Thresholds are the DMA's (PUT /dmas/:id losses)."

const PRESSURE_DOC =
  "Average zone pressure from the customer meters' pressure_avg_pa: per meter the interval_s-weighted mean (an " +
  "interval counts in the bucket it starts in), then the plain mean over meters (bulk meters left out). Where the " +
  "DMA has mainsKm and connections: Lambert's UARL (L/day) = (18 × Lm + 0.8 × Nc + 25 × Lp) × P (Lambert et al. " +
  "1999; IWA Blue Pages 2000), Lp = Nc × avgServiceLengthM / 1000 km, P in m head (9.80665 kPa per m), and ILI = " +
  "CARL / UARL with CARL the balance's water losses over the period per day. Apparent losses are not subtracted: " +
  "the ILI is an upper bound (apparentLossesSubtracted: false)."

export async function dmaLossRoutes(app: FastifyInstance, { store }: RouteContext) {
  app.get<{ Params: { id: string }; Querystring: { from?: string; to?: string } }>(
    "/dmas/:id/apparent-losses",
    {
      schema: {
        tags: ["dmas"],
        summary: "A DMA's apparent losses: stuck meters, under-registration, tamper before a drop, reverse flow",
        description: LOSSES_DOC,
        params: dmaParam,
        querystring: strictQuery(rangeProps),
        response: {
          200: {
            type: "object",
            properties: {
              dmaId: { type: "string" },
              from: { type: "string", format: "date-time" },
              to: { type: "string", format: "date-time" },
              losses: { type: "object", additionalProperties: true, description: "the thresholds applied" },
              findings: {
                type: "array",
                items: {
                  type: "object",
                  properties: {
                    meterId: { type: "string" },
                    kind: { type: "string", enum: [...APPARENT_LOSS_KINDS] },
                    from: { type: "string", format: "date-time" },
                    to: { type: "string", format: "date-time" },
                    evidence: { type: "object", additionalProperties: true, description: "the rule's numbers" },
                  },
                },
              },
            },
          },
          ...ERROR_RESPONSES,
        },
      },
    },
    async (req) => {
      const { from, to } = dayRange(req.query, "apparent losses")
      const d = await store.getDma(req.params.id)
      if (!d) throw errors.CM_ERR_NOT_FOUND(`DMA ${req.params.id}`)
      const found = await store.dmaApparentLosses({ dmaId: d.dmaId, from, to, config: d.losses })
      return {
        dmaId: d.dmaId,
        from: from.toISOString(),
        to: to.toISOString(),
        losses: d.losses,
        findings: found.map((f) => ({ ...f, from: f.from.toISOString(), to: f.to.toISOString() })),
      }
    },
  )

  const num = (description: string) => ({ type: "number", nullable: true, description })
  app.get<{ Params: { id: string }; Querystring: { from?: string; to?: string; bucket?: "hour" | "day" } }>(
    "/dmas/:id/pressure",
    {
      schema: {
        tags: ["dmas"],
        summary: "A DMA's average zone pressure per hour or day, and its Infrastructure Leakage Index",
        description: PRESSURE_DOC,
        params: dmaParam,
        querystring: strictQuery({ ...rangeProps, bucket: { type: "string", enum: ["hour", "day"], default: "day" } }),
        response: {
          200: {
            type: "object",
            properties: {
              dmaId: { type: "string" },
              bucket: { type: "string" },
              avgPa: num("the period's average zone pressure, Pa"),
              meters: { type: "integer", description: "customer meters with pressure readings" },
              buckets: {
                type: "array",
                items: {
                  type: "object",
                  properties: {
                    start: { type: "string", format: "date-time" },
                    avgPa: num("Pa"),
                    meters: { type: "integer" },
                  },
                },
              },
              ili: {
                type: "object",
                nullable: true,
                description: "null without mainsKm and connections, pressure readings or system input",
                properties: {
                  carlLPerDay: num("current real losses: the balance's losses per day, L/day"),
                  uarlLPerDay: num("unavoidable annual real losses, L/day"),
                  ili: num("CARL / UARL"),
                  pressureM: num("average zone pressure, m head"),
                  mainsKm: num("Lm, km"),
                  connections: num("Nc"),
                  privatePipeKm: num("Lp, km"),
                  apparentLossesSubtracted: { type: "boolean" },
                  provisional: { type: "boolean", description: "some day of the balance is provisional" },
                  inValidatedRange: { type: "boolean", description: "Nc ≥ 3000 and P ≥ 25 m" },
                },
              },
            },
          },
          ...ERROR_RESPONSES,
        },
      },
    },
    async (req) => {
      const { from, to } = dayRange(req.query, "pressure")
      const bucket = req.query.bucket ?? "day"
      if (!(await store.getDma(req.params.id))) throw errors.CM_ERR_NOT_FOUND(`DMA ${req.params.id}`)
      const ans = await store.dmaPressure({ dmaId: req.params.id, bucket, from, to })
      return {
        dmaId: req.params.id,
        bucket,
        avgPa: ans.avgPa,
        meters: ans.meters,
        buckets: ans.buckets.map((b) => ({ ...b, start: b.start.toISOString() })),
        ili: ans.ili,
      }
    },
  )
}
