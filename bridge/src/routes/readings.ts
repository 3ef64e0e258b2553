// Readings: one meter's intervals (JSON or CSV), its consumption per bucket, the fleet's
// consumption per bucket, the fleet's latest.
import type { FastifyInstance } from "fastify"
import { ERROR_RESPONSES, errors } from "../errors.js"
import { READING_COLUMNS, READING_FIELDS_DOC, readingColumnsSchema, readingJsonSchema } from "../store/columns.js"
import { columnsJson } from "../store/columns-json.js"
import type { ReadingColumns } from "../store/reading-columns-store.js"
import { BUCKETS, type Bucket, type ReadingRow } from "../store/store.js"
import { knownMeter, meterIdSchema, meterParam, strictQuery, textSchema, type RouteContext } from "./shared.js"
import { afterParam, keysetPage } from "./paging.js"
import { checkTimeZone, parseRange, rangeProps } from "./time.js"

/** CSV columns of a reading export, in order (RFC 4180; no field needs quoting): a reading's columns. */
export const CSV_COLUMNS: readonly (keyof ReadingRow)[] = READING_COLUMNS.map((c) => c.key)

function readingsCsv(rows: ReadingRow[]): string {
  const cell = (v: unknown) => (v === null || v === undefined ? "" : v instanceof Date ? v.toISOString() : String(v))
  const lines = [CSV_COLUMNS.join(",")]
  for (const r of rows) lines.push(CSV_COLUMNS.map((c) => cell(r[c])).join(","))
  return lines.join("\r\n") + "\r\n"
}

const readingJson = ({ meterId: _m, ts, ...r }: ReadingRow) => ({ ts: ts.toISOString(), ...r })

type ReadingsQs = { from?: string; to?: string; limit?: number; after?: string; format?: "json" | "csv" }
type ConsumptionQs = { bucket?: Bucket; from?: string; to?: string; tz?: string }

/** Readings per page unless `limit` says otherwise; past it the answer has a `next`. */
export const READINGS_PAGE = 10000
/** The sort key of a reading (the row form's cursor): ts (ms), boot, seq, idx. */
const KEY_COLUMNS = ["ts", "boot", "seq", "idx"] as const
/** The bucket of /consumption when the query names none. */
export const DEFAULT_BUCKET: Bucket = "day"

export async function readingRoutes(app: FastifyInstance, { store }: RouteContext) {
  app.get<{ Params: { id: string }; Querystring: ReadingsQs }>(
    "/meters/:id/readings",
    {
      schema: {
        tags: ["readings"],
        summary: "Interval readings in a time range, oldest first, in keyset pages (JSON, or CSV with format=csv)",
        description:
          `At most \`limit\` readings (default ${READINGS_PAGE}); when more follow, \`next\` (JSON) or the ` +
          '`Link: <…>; rel="next"` header (CSV) gives the next page: pass it as `after`. `next` is null on the last page. ' +
          `Fields (CSV columns, in this order): ${READING_FIELDS_DOC}.`,
        params: meterParam,
        querystring: strictQuery({
          ...rangeProps,
          limit: { type: "integer", minimum: 1, maximum: 100000, default: READINGS_PAGE },
          after: afterParam,
          format: { type: "string", enum: ["json", "csv"] },
        }),
        response: {
          200: {
            description: "JSON; with format=csv, text/csv with the same fields as columns (meterId first)",
            type: "object",
            required: ["meterId", "readings", "next"],
            properties: {
              meterId: meterIdSchema,
              readings: { type: "array", items: readingJsonSchema(["meterId"]) },
              next: { type: "string", nullable: true },
            },
          },
          ...ERROR_RESPONSES,
        },
      },
    },
    async (req, reply) => {
      const { from, to } = parseRange(req.query)
      await knownMeter(store, req.params.id)
      const { rows, next } = await keysetPage({
        fetch: (from, limit) => store.readings(req.params.id, { from, to, limit }),
        key: (r) => [r.ts.getTime(), r.boot, r.seq, r.idx],
        from,
        after: req.query.after,
        limit: req.query.limit ?? READINGS_PAGE,
      })
      if (req.query.format === "csv") {
        if (next) {
          const url = new URL(req.url, "http://x")
          url.searchParams.set("after", next)
          void reply.header("link", `<${url.pathname}${url.search}>; rel="next"`)
        }
        return reply
          .header("content-type", "text/csv; charset=utf-8")
          .header("content-disposition", `attachment; filename="${req.params.id}-readings.csv"`)
          .send(readingsCsv(rows))
      }
      return { meterId: req.params.id, readings: rows.map(readingJson), next }
    },
  )

  app.get<{ Params: { id: string }; Querystring: Omit<ReadingsQs, "format"> }>(
    "/meters/:id/readings/columns",
    {
      schema: {
        tags: ["readings"],
        summary: "The same readings as /meters/{id}/readings, as columns: one array per field",
        description:
          "The readings of /meters/{id}/readings (same range, order, `limit`, `after` and `next`), each field " +
          "an array of the page's values in order: a meter's year of 15-minute readings (35,040) is one answer " +
          "of 3.8 MB, read from the compacted blocks without a row per reading (issue 24). `ts` is in epoch " +
          `milliseconds (UTC); the other fields as in the row form: ${READING_FIELDS_DOC}.`,
        params: meterParam,
        querystring: strictQuery({
          ...rangeProps,
          limit: { type: "integer", minimum: 1, maximum: 100000, default: READINGS_PAGE },
          after: afterParam,
        }),
        response: {
          200: {
            type: "object",
            required: ["meterId", "count", "columns", "next"],
            properties: {
              meterId: meterIdSchema,
              count: { type: "integer", description: "readings in this page (the length of every column)" },
              columns: readingColumnsSchema(),
              next: { type: "string", nullable: true },
            },
          },
          ...ERROR_RESPONSES,
        },
      },
    },
    async (req, reply) => {
      const { from, to } = parseRange(req.query)
      await knownMeter(store, req.params.id)
      // keyset paging over positions in the fetched columns (the row form's cursor and cut)
      let cols: ReadingColumns = { count: 0, columns: {} }
      const { rows: page, next } = await keysetPage({
        fetch: async (from, limit) => {
          cols = await store.readingColumns(req.params.id, { from, to, limit })
          return Array.from({ length: cols.count }, (_, i) => i)
        },
        key: (i) => KEY_COLUMNS.map((k) => cols.columns[k][i] as number),
        from,
        after: req.query.after,
        limit: req.query.limit ?? READINGS_PAGE,
      })
      const whole = page.length === cols.count && page.every((p, i) => p === i)
      const columns = whole
        ? cols.columns
        : Object.fromEntries(Object.entries(cols.columns).map(([k, v]) => [k, page.map((i) => v[i])]))
      // written here as bytes (columns-json.ts): JSON.stringify and fast-json-stringify were slower
      return reply
        .header("content-type", "application/json; charset=utf-8")
        .send(columnsJson(req.params.id, page.length, columns, next))
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
          "Intervals are bucketed by their start time. By hour, day or month this reads the hourly and daily " +
          "rollups when from/to lie on whole hours and the time zone's offsets are whole hours; otherwise, and by " +
          "15 minutes, the readings.",
        params: meterParam,
        querystring: strictQuery({
          ...rangeProps,
          bucket: { type: "string", enum: [...BUCKETS], default: DEFAULT_BUCKET },
          tz: { type: "string", description: "IANA time zone for hour/day/month boundaries (default UTC)" },
        }),
        response: ERROR_RESPONSES,
      },
    },
    async (req) => {
      const { from, to } = parseRange(req.query)
      const tz = checkTimeZone(req.query.tz)
      await knownMeter(store, req.params.id)
      const bucket = req.query.bucket ?? DEFAULT_BUCKET
      const rows = await store.consumption(req.params.id, { bucket, from, to, tz })
      return {
        meterId: req.params.id,
        bucket,
        tz: tz ?? "UTC",
        consumption: rows.map((r) => ({ ...r, start: r.start.toISOString() })),
      }
    },
  )

  app.get<{ Querystring: ConsumptionQs & { district?: string } }>(
    "/consumption",
    {
      schema: {
        tags: ["readings"],
        summary: "The whole fleet's consumption per bucket (every meter's, summed), from the hourly and daily rollups",
        description:
          "Each meter's consumption as in /meters/{id}/consumption, summed per bucket; meters counts the meters " +
          "with readings in it. Read from the rollups only: from/to must lie on whole hours (whole UTC days are " +
          "fastest, with tz UTC) and the time zone's offsets must be whole hours. By day on whole UTC days it reads " +
          "one row per district and day; `district` narrows it to one district's meters ('' for meters without " +
          "one), counted where the meter was when its day was first stored.",
        querystring: {
          ...strictQuery({
            ...rangeProps,
            bucket: { type: "string", enum: BUCKETS.filter((b) => b !== "15min"), default: DEFAULT_BUCKET },
            tz: { type: "string", description: "IANA time zone for hour/day/month boundaries (default UTC)" },
            district: {
              ...textSchema(80),
              description: "one district's meters ('' for meters without one); bucket day on whole UTC days",
            },
          }),
        },
        response: ERROR_RESPONSES,
      },
    },
    async (req) => {
      const { from, to } = parseRange(req.query)
      const tz = checkTimeZone(req.query.tz)
      const bucket = req.query.bucket ?? DEFAULT_BUCKET
      const district = req.query.district
      const rows = await store.fleetConsumption({ bucket, from, to, tz, district })
      if (!rows)
        throw errors.CM_ERR_BAD_QUERY(
          district !== undefined
            ? "a district's consumption is read from its daily rollups: bucket day, tz UTC, and from and to on whole UTC days"
            : "fleet consumption is read from hourly rollups: from and to must lie on whole hours, and the time zone's offsets be whole hours",
        )
      return {
        bucket,
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
        description: `Fields: ${READING_FIELDS_DOC}.`,
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
