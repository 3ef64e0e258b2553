// Readings: one meter's intervals (JSON or CSV), its consumption per bucket, the fleet's latest.
import type { FastifyInstance } from "fastify"
import { ERROR_RESPONSES } from "../errors.js"
import { BUCKETS, type Bucket, type ReadingRow } from "../store/store.js"
import { knownMeter, meterIdSchema, meterParam, strictQuery, type RouteContext } from "./shared.js"
import { checkTimeZone, parseRange, rangeProps } from "./time.js"

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

const readingJson = ({ meterId: _m, ts, ...r }: ReadingRow) => ({ ts: ts.toISOString(), ...r })

type ReadingsQs = { from?: string; to?: string; limit?: number; format?: "json" | "csv" }
type ConsumptionQs = { bucket: Bucket; from?: string; to?: string; tz?: string }

export async function readingRoutes(app: FastifyInstance, { store }: RouteContext) {
  app.get<{ Params: { id: string }; Querystring: ReadingsQs }>(
    "/meters/:id/readings",
    {
      schema: {
        tags: ["readings"],
        summary: "Interval readings in a time range (JSON, or CSV with format=csv)",
        params: meterParam,
        querystring: strictQuery({
          ...rangeProps,
          limit: { type: "integer", minimum: 1, maximum: 100000 },
          format: { type: "string", enum: ["json", "csv"] },
        }),
        response: ERROR_RESPONSES,
      },
    },
    async (req, reply) => {
      const { from, to } = parseRange(req.query)
      await knownMeter(store, req.params.id)
      const rows = await store.readings(req.params.id, { from, to, limit: req.query.limit })
      if (req.query.format === "csv")
        return reply
          .header("content-type", "text/csv; charset=utf-8")
          .header("content-disposition", `attachment; filename="${req.params.id}-readings.csv"`)
          .send(readingsCsv(rows))
      return { meterId: req.params.id, readings: rows.map(readingJson) }
    },
  )

  app.get<{ Params: { id: string }; Querystring: ConsumptionQs }>(
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
          ...strictQuery({
            ...rangeProps,
            bucket: { type: "string", enum: [...BUCKETS] },
            tz: { type: "string", description: "IANA time zone for hour/day/month boundaries (default UTC)" },
          }),
          required: ["bucket"],
        },
        response: ERROR_RESPONSES,
      },
    },
    async (req) => {
      const { from, to } = parseRange(req.query)
      const tz = checkTimeZone(req.query.tz)
      await knownMeter(store, req.params.id)
      const rows = await store.consumption(req.params.id, { bucket: req.query.bucket, from, to, tz })
      return {
        meterId: req.params.id,
        bucket: req.query.bucket,
        tz: tz ?? "UTC",
        consumption: rows.map((r) => ({ ...r, start: r.start.toISOString() })),
      }
    },
  )

  app.get<{ Querystring: { after?: string; limit?: number } }>(
    "/readings/latest",
    {
      schema: {
        tags: ["readings"],
        summary: "The newest reading of every meter (one row per meter; keyset pages with after/next)",
        querystring: strictQuery({
          after: meterIdSchema,
          limit: { type: "integer", minimum: 1, maximum: 200000, default: 200000 },
        }),
        response: ERROR_RESPONSES,
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
}
