// District metered areas (issue 25 items 1-3): the network model (reads open, changes with the ops
// scope), each DMA's water balance per hour, day or month, and its minimum night flow per night.
// The balance by day and month reads per-district day sums kept at ingest beside per-meter rows for
// bulk and named meters; by hour, and the night flow, per meter from the rollups (store/dma-balance.ts,
// dma-days.ts): a late frame changes exactly the periods it touches.
import type { FastifyInstance } from "fastify"
import { boundaryError, asBoundary } from "../dma/geojson.js"
import { ERROR_RESPONSES, errors } from "../errors.js"
import { BALANCE_BUCKETS, type BalanceBucket, type DmaBalanceRow } from "../store/dma-balance.js"
import {
  LOSSES_DEFAULTS,
  NIGHT_FLOW_DEFAULTS,
  type DmaRow,
  type LossesConfig,
  type NightFlowConfig,
} from "../store/dmas.js"
import { LOSSES_BODY, NETWORK_BODY_PROPS, networkJson } from "./dma-settings.js"
import { meterIdSchema, strictQuery, textSchema, type RouteContext } from "./shared.js"
import { checkTimeZone, parseRange, rangeProps } from "./time.js"

export const DMA_ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$"
/** The most periods one balance answers, and nights one night-flow answer. */
export const MAX_PERIODS = 1000
export const MAX_NIGHTS = 92
/** A PUT's body: a boundary of MAX_BOUNDARY_POSITIONS positions and long meter lists fit. */
export const DMA_BODY_LIMIT = 1024 * 1024
const MAX_METERS = 20_000
const WINDOW = "^([01][0-9]|2[0-3]):00-([01][0-9]|2[0-3]):00$"

const dmaParam = {
  type: "object",
  required: ["id"],
  properties: { id: { type: "string", pattern: DMA_ID_PATTERN } },
} as const

const windowText = (c: Pick<NightFlowConfig, "fromHour" | "toHour">) =>
  `${String(c.fromHour).padStart(2, "0")}:00-${String(c.toHour).padStart(2, "0")}:00`

export const dmaJson = (d: DmaRow) => ({
  dmaId: d.dmaId,
  name: d.name,
  parentId: d.parentId,
  boundary: d.boundary,
  inflow: d.inflow,
  outflow: d.outflow,
  customers: d.customers,
  nightFlow: {
    window: windowText(d.nightFlow),
    tz: d.nightFlow.tz,
    baselineNights: d.nightFlow.baselineNights,
    riseMlPerH: d.nightFlow.riseMlPerH,
    risePct: d.nightFlow.risePct,
    customerNights: d.nightFlow.customerNights,
  },
  ...networkJson(d),
  updatedAt: d.updatedAt.toISOString(),
})

const balanceJson = ({ dmaId: _d, start, ...b }: DmaBalanceRow) => ({ start: start.toISOString(), ...b })

/** CSV columns of a balance export, in order (RFC 4180; no field needs quoting): the JSON row's fields, dmaId first. */
export const BALANCE_CSV_COLUMNS = [
  "dmaId",
  "start",
  "inflowMl",
  "outflowMl",
  "systemInputMl",
  "billedMl",
  "lossesMl",
  "nrwShare",
  "meters",
  "completeMeters",
  "coverage",
  "provisional",
] as const satisfies readonly (keyof DmaBalanceRow)[]

/**
 * A balance cell: an ISO 8601 UTC time, an integer as its decimal digits, a share (nrwShare,
 * coverage) with a decimal point and at most 9 decimals (never an exponent, whatever the locale),
 * true/false, and empty for null.
 */
export function balanceCell(v: DmaBalanceRow[keyof DmaBalanceRow]): string {
  if (v === null) return ""
  if (v instanceof Date) return v.toISOString()
  if (typeof v === "number") {
    if (Number.isInteger(v)) return v.toFixed(0)
    const s = v.toFixed(9).replace(/\.?0+$/, "")
    return s === "-0" ? "0" : s
  }
  return String(v)
}

export function balanceCsv(rows: DmaBalanceRow[]): string {
  const lines = [BALANCE_CSV_COLUMNS.join(",")]
  for (const r of rows) lines.push(BALANCE_CSV_COLUMNS.map((c) => balanceCell(r[c])).join(","))
  return lines.join("\r\n") + "\r\n"
}

const CSV_TYPE = "text/csv; charset=utf-8; header=present"

const meterList = { type: "array", maxItems: MAX_METERS, uniqueItems: true, items: meterIdSchema } as const

const NIGHT_FLOW_BODY = {
  type: "object",
  additionalProperties: false,
  properties: {
    window: { type: "string", pattern: WINDOW, description: "local hours HH:00-HH:00 (default 02:00-04:00)" },
    tz: { type: "string", maxLength: 64, description: "IANA time zone of the window (default UTC)" },
    baselineNights: { type: "integer", minimum: 1, maximum: 60, description: "nights in the baseline (default 7)" },
    riseMlPerH: { type: "integer", minimum: 0, maximum: 1e12, description: "mL/h above baseline (default 50000)" },
    risePct: { type: "number", minimum: 0, maximum: 10000, description: "% above baseline (default 20)" },
    customerNights: { type: "integer", minimum: 1, maximum: 60, description: "never-zero nights (default 3)" },
  },
} as const

interface PutBody {
  name: string
  parentId?: string | null
  boundary?: unknown
  inflow?: string[]
  outflow?: string[]
  customers?: string[]
  nightFlow?: Partial<Omit<NightFlowConfig, "fromHour" | "toHour">> & { window?: string }
  losses?: Partial<LossesConfig>
  mainsKm?: number | null
  connections?: number | null
  avgServiceLengthM?: number | null
}

const balanceRowSchema = {
  type: "object",
  properties: {
    start: { type: "string", format: "date-time" },
    inflowMl: { type: "number", description: "inflow meters, forward − reverse, mL" },
    outflowMl: { type: "number", description: "outflow meters, forward − reverse, mL" },
    systemInputMl: { type: "number", description: "system input volume: inflow − outflow, mL" },
    billedMl: { type: "number", description: "billed metered consumption: the customer meters, mL" },
    lossesMl: { type: "number", description: "water losses: system input − billed, mL" },
    nrwShare: { type: "number", nullable: true, description: "non-revenue water: losses / system input" },
    meters: { type: "integer" },
    completeMeters: { type: "integer", description: "meters with every interval of the period stored" },
    coverage: { type: "number", description: "completeMeters / meters" },
    provisional: { type: "boolean", description: "coverage < 1: late frames may still change it" },
  },
} as const

/** [from, to) of a balance: both given, on the bucket's edges, at most MAX_PERIODS periods. */
function balanceRange(q: { from?: string; to?: string }, bucket: BalanceBucket) {
  const { from, to } = parseRange(q)
  if (!from || !to) throw errors.CM_ERR_BAD_QUERY("a balance needs from and to")
  const edge = (d: Date) =>
    bucket === "hour"
      ? d.getTime() % 3_600_000 === 0
      : d.getTime() % 86_400_000 === 0 && (bucket === "day" || d.getUTCDate() === 1)
  if (!edge(from) || !edge(to))
    throw errors.CM_ERR_BAD_QUERY(
      `by ${bucket}, from and to lie on ${bucket === "hour" ? "whole hours" : bucket === "day" ? "whole UTC days" : "UTC month starts"}`,
    )
  const n = (to.getTime() - from.getTime()) / (bucket === "hour" ? 3_600_000 : bucket === "day" ? 86_400_000 : 2.4e9)
  if (n > MAX_PERIODS) throw errors.CM_ERR_BAD_QUERY(`at most ${MAX_PERIODS} periods at once`)
  return { from, to }
}

const BALANCE_DOC =
  "IWA water-balance terms per period, from the rollups (by day and month: district sums kept at ingest): system input volume (the inflow " +
  "meters' forward minus reverse volume, less the outflow meters'), billed metered consumption (the customer meters), " +
  "water losses (input − billed) and the non-revenue water share (losses / input). coverage is the share of the DMA's " +
  "meters with every interval of the period stored (no gap inside, the last interval reaching the period's end, the " +
  "first starting where the meter's previous interval ended); provisional while it is below 1. UTC periods; by hour " +
  "before the compaction horizon from the readings."

export async function dmaRoutes(app: FastifyInstance, { store, requireScope }: RouteContext) {
  app.get(
    "/dmas",
    {
      schema: {
        tags: ["dmas"],
        summary: "District metered areas: bulk meters, explicit customers, parent, boundary, night-flow settings",
        response: ERROR_RESPONSES,
      },
    },
    async () => ({ dmas: (await store.listDmas()).map(dmaJson) }),
  )

  app.get<{ Params: { id: string } }>(
    "/dmas/:id",
    {
      schema: {
        tags: ["dmas"],
        summary: "A DMA and its meters by role (explicit members, and the meters of the district named as the DMA)",
        params: dmaParam,
        response: ERROR_RESPONSES,
      },
    },
    async (req) => {
      const d = await store.getDma(req.params.id)
      if (!d) throw errors.CM_ERR_NOT_FOUND(`DMA ${req.params.id}`)
      return { ...dmaJson(d), members: await store.dmaMembers(d.dmaId) }
    },
  )

  app.put<{ Params: { id: string }; Body: PutBody }>(
    "/dmas/:id",
    {
      onRequest: requireScope.ops,
      bodyLimit: DMA_BODY_LIMIT,
      schema: {
        tags: ["dmas"],
        summary: "Create or replace a DMA (ops scope): 201 when new, 200 when replaced",
        description:
          "Meters must be registered; a meter has one role per DMA (it may feed one DMA and drain another). " +
          "Customers are the meters whose district is the DMA's id, plus `customers`. The boundary is a GeoJSON " +
          "Polygon or MultiPolygon, WGS 84, closed rings, at most 10000 positions. `losses`: the apparent-loss " +
          "thresholds (GET /dmas/:id/apparent-losses); mainsKm, connections, avgServiceLengthM: the network's size " +
          "for the ILI (GET /dmas/:id/pressure).",
        security: [{ bearer: [] }],
        params: dmaParam,
        body: {
          type: "object",
          additionalProperties: false,
          required: ["name"],
          properties: {
            name: textSchema(200, 1),
            parentId: { type: "string", pattern: DMA_ID_PATTERN, nullable: true },
            boundary: { type: "object", nullable: true, description: "GeoJSON Polygon or MultiPolygon" },
            inflow: meterList,
            outflow: meterList,
            customers: meterList,
            nightFlow: NIGHT_FLOW_BODY,
            losses: LOSSES_BODY,
            ...NETWORK_BODY_PROPS,
          },
        },
        response: ERROR_RESPONSES,
      },
    },
    async (req, reply) => {
      const b = req.body
      const dmaId = req.params.id
      if (b.boundary !== undefined && b.boundary !== null) {
        const why = boundaryError(b.boundary)
        if (why) throw errors.CM_ERR_BAD_REQUEST(`boundary: ${why}`)
      }
      const [inflow, outflow, customers] = [b.inflow ?? [], b.outflow ?? [], b.customers ?? []]
      const seen = new Set<string>()
      for (const m of [...inflow, ...outflow, ...customers]) {
        if (seen.has(m)) throw errors.CM_ERR_BAD_REQUEST(`meter ${m} has more than one role in DMA ${dmaId}`)
        seen.add(m)
      }
      if (b.parentId === dmaId) throw errors.CM_ERR_BAD_REQUEST(`DMA ${dmaId} cannot be its own parent`)
      const nf = b.nightFlow ?? {}
      const tz = checkTimeZone(nf.tz) ?? NIGHT_FLOW_DEFAULTS.tz
      const [fromHour, toHour] = nf.window
        ? nf.window.split("-").map((s) => Number(s.slice(0, 2)))
        : [NIGHT_FLOW_DEFAULTS.fromHour, NIGHT_FLOW_DEFAULTS.toHour]
      if (fromHour === toHour) throw errors.CM_ERR_BAD_REQUEST("nightFlow.window: two different hours")
      const out = await store.putDma(
        {
          dmaId,
          name: b.name,
          parentId: b.parentId ?? null,
          boundary: b.boundary ? asBoundary(b.boundary) : null,
          inflow,
          outflow,
          customers,
          nightFlow: { ...NIGHT_FLOW_DEFAULTS, ...nf, tz, fromHour, toHour },
          losses: { ...LOSSES_DEFAULTS, ...b.losses },
          mainsKm: b.mainsKm ?? null,
          connections: b.connections ?? null,
          avgServiceLengthM: b.avgServiceLengthM ?? null,
        },
        new Date(),
      )
      if (out.kind === "refused") throw errors.CM_ERR_BAD_REQUEST(`DMA ${dmaId}: ${out.detail}`)
      void reply.code(out.created ? 201 : 200)
      return dmaJson(out.dma)
    },
  )

  app.delete<{ Params: { id: string } }>(
    "/dmas/:id",
    {
      onRequest: requireScope.ops,
      schema: {
        tags: ["dmas"],
        summary: "Delete a DMA (ops scope); CM_ERR_DMA_CONFLICT while it has sub-DMAs",
        security: [{ bearer: [] }],
        params: dmaParam,
        response: ERROR_RESPONSES,
      },
    },
    async (req) => {
      const r = await store.deleteDma(req.params.id)
      if (r === "missing") throw errors.CM_ERR_NOT_FOUND(`DMA ${req.params.id}`)
      if (r === "children") throw errors.CM_ERR_DMA_CONFLICT(req.params.id, "has sub-DMAs: delete or move them first")
      return { dmaId: req.params.id, deleted: true }
    },
  )

  const balanceQuery = strictQuery({
    ...rangeProps,
    bucket: { type: "string", enum: [...BALANCE_BUCKETS], default: "day" },
    format: {
      type: "string",
      enum: ["json", "csv"],
      description: "json (default), or csv: one row per period (and DMA), a header row of the field names",
    },
  })
  const CSV_DOC =
    " With format=csv: text/csv (RFC 4180, CRLF line ends, a header row), one row per period and DMA, columns " +
    `${BALANCE_CSV_COLUMNS.join(", ")}; volumes in whole mL, nrwShare and coverage as decimal fractions with at ` +
    "most 9 decimals (never an exponent), provisional true/false, nrwShare empty where the JSON has null."
  type BalanceQs = { bucket?: BalanceBucket; from?: string; to?: string; format?: "json" | "csv" }

  app.get<{ Params: { id: string }; Querystring: BalanceQs }>(
    "/dmas/:id/balance",
    {
      schema: {
        tags: ["dmas"],
        summary: "A DMA's water balance per hour, day or month (JSON, or CSV with format=csv)",
        description: BALANCE_DOC + CSV_DOC,
        params: dmaParam,
        querystring: balanceQuery,
        response: {
          200: {
            description: "JSON; with format=csv, text/csv with the same fields as columns (dmaId first)",
            type: "object",
            properties: {
              dmaId: { type: "string" },
              bucket: { type: "string" },
              balance: { type: "array", items: balanceRowSchema },
            },
          },
          ...ERROR_RESPONSES,
        },
      },
    },
    async (req, reply) => {
      const bucket = req.query.bucket ?? "day"
      const { from, to } = balanceRange(req.query, bucket)
      if (!(await store.getDma(req.params.id))) throw errors.CM_ERR_NOT_FOUND(`DMA ${req.params.id}`)
      const rows = await store.dmaBalance({ dmaIds: [req.params.id], bucket, from, to })
      if (req.query.format === "csv")
        return reply
          .header("content-type", CSV_TYPE)
          .header("content-disposition", `attachment; filename="${req.params.id}-balance-${bucket}.csv"`)
          .send(balanceCsv(rows))
      return { dmaId: req.params.id, bucket, balance: rows.map(balanceJson) }
    },
  )

  app.get<{ Querystring: BalanceQs }>(
    "/balances",
    {
      schema: {
        tags: ["dmas"],
        summary: "Every DMA's water balance per hour, day or month (JSON, or CSV with format=csv)",
        description: BALANCE_DOC + CSV_DOC,
        querystring: balanceQuery,
        response: {
          200: {
            description: "JSON; with format=csv, text/csv with the same fields as columns (dmaId first)",
            type: "object",
            properties: {
              bucket: { type: "string" },
              balances: {
                type: "array",
                items: {
                  ...balanceRowSchema,
                  properties: { dmaId: { type: "string" }, ...balanceRowSchema.properties },
                },
              },
            },
          },
          ...ERROR_RESPONSES,
        },
      },
    },
    async (req, reply) => {
      const bucket = req.query.bucket ?? "day"
      const { from, to } = balanceRange(req.query, bucket)
      const rows = await store.dmaBalance({ bucket, from, to })
      if (req.query.format === "csv")
        return reply
          .header("content-type", CSV_TYPE)
          .header("content-disposition", `attachment; filename="balances-${bucket}.csv"`)
          .send(balanceCsv(rows))
      return { bucket, balances: rows.map((r) => ({ dmaId: r.dmaId, ...balanceJson(r) })) }
    },
  )

  app.get<{
    Params: { id: string }
    Querystring: { from?: string; to?: string; window?: string; tz?: string; meters?: boolean }
  }>(
    "/dmas/:id/night-flow",
    {
      schema: {
        tags: ["dmas"],
        summary: "A DMA's minimum night flow per night, and optionally each customer meter's",
        description:
          "Per night (the local date its window starts): the lowest hourly system input in the window (mL/h), its " +
          "hour, the customers' consumption then, and whether every hour of the window is stored; with meters=true, " +
          "each customer meter's lowest hourly consumption (0 for a meter that stops at night). The window and time " +
          "zone default to the DMA's settings. Nights whose window starts in [from, to), at most 92.",
        params: dmaParam,
        querystring: strictQuery({
          ...rangeProps,
          window: { type: "string", pattern: WINDOW, description: "local hours HH:00-HH:00" },
          tz: { type: "string", description: "IANA time zone of the window" },
          meters: { type: "boolean", default: false },
        }),
        response: ERROR_RESPONSES,
      },
    },
    async (req) => {
      const { from, to } = parseRange(req.query)
      if (!from || !to) throw errors.CM_ERR_BAD_QUERY("night flow needs from and to")
      if (to.getTime() - from.getTime() > MAX_NIGHTS * 86_400_000)
        throw errors.CM_ERR_BAD_QUERY(`at most ${MAX_NIGHTS} nights at once`)
      const d = await store.getDma(req.params.id)
      if (!d) throw errors.CM_ERR_NOT_FOUND(`DMA ${req.params.id}`)
      const tz = checkTimeZone(req.query.tz) ?? d.nightFlow.tz
      const [fromHour, toHour] = req.query.window
        ? req.query.window.split("-").map((s) => Number(s.slice(0, 2)))
        : [d.nightFlow.fromHour, d.nightFlow.toHour]
      if (fromHour === toHour) throw errors.CM_ERR_BAD_QUERY("window: two different hours")
      const ans = await store.dmaNightFlow({
        dmaId: d.dmaId,
        from,
        to,
        window: { fromHour, toHour, tz },
        meters: req.query.meters === true,
      })
      return {
        dmaId: d.dmaId,
        window: windowText({ fromHour, toHour }),
        tz,
        nights: ans.dma.map((n) => ({ ...n, at: n.at?.toISOString() ?? null })),
        ...(req.query.meters ? { meters: ans.meters } : {}),
      }
    },
  )
}
