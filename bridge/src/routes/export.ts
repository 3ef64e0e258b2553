// Bulk open-data export: every meter's readings of one UTC day or month, as CSV or NDJSON, for a
// city's open-data portal to harvest. GET /export lists the periods, GET /export/dictionary.json
// describes the columns (generated from store/columns.ts: meaning, UCUM unit, OBIS code) and
// states the licence the utility publishes under (EXPORT_LICENSE). A file is one streamed query
// (store/export-rows.ts) sent batch by batch as the client takes it, so a month never sits in
// memory; a client that goes away ends the query.
import { Readable } from "node:stream"
import type { FastifyInstance, FastifyReply } from "fastify"
import { BRIDGE_DEFAULTS } from "../defaults.js"
import { ERROR_RESPONSES, errors } from "../errors.js"
import { READING_COLUMNS, describeColumn, type ReadingColumn } from "../store/columns.js"
import { EXPORT_BATCH } from "../store/export-rows.js"
import type { ReadingRow, Store } from "../store/store.js"
import { keysetPage } from "./paging.js"
import { CSV_COLUMNS } from "./readings.js"
import { strictQuery, type RouteContext } from "./shared.js"

/** The licence of the exported data, as the utility sets it. */
export interface ExportLicense {
  /** An SPDX id (CC-BY-4.0, ODbL-1.0) or the licence's name. */
  name: string
  url?: string
}

export const DEFAULT_EXPORT_LICENSE: ExportLicense = {
  name: BRIDGE_DEFAULTS.exportLicense,
  url: BRIDGE_DEFAULTS.exportLicenseUrl,
}

/** Readings fetched per batch of the file's query (a cursor's FETCH; a keyset page on PGlite). */
export const EXPORT_PAGE = EXPORT_BATCH

const FORMATS = {
  csv: "text/csv; charset=utf-8; header=present",
  ndjson: "application/x-ndjson; charset=utf-8",
} as const
type Format = keyof typeof FORMATS

/** The export takes no query options: any key is refused (CM_ERR_UNKNOWN_KEY), never ignored. */
const NO_QUERY = strictQuery({})

const PERIOD = /^(\d{4})-(\d{2})(?:-(\d{2}))?$/

/** A period's [from, to) in UTC: YYYY-MM (a month) or YYYY-MM-DD (a day); undefined when not a date. */
export function parsePeriod(period: string): { from: Date; to: Date; kind: "month" | "day" } | undefined {
  const m = PERIOD.exec(period)
  if (!m) return undefined
  const [y, mo] = [Number(m[1]), Number(m[2])]
  if (y < 1970 || mo < 1 || mo > 12) return undefined
  if (m[3] === undefined)
    return { from: new Date(Date.UTC(y, mo - 1, 1)), to: new Date(Date.UTC(y, mo, 1)), kind: "month" }
  const d = Number(m[3])
  const from = new Date(Date.UTC(y, mo - 1, d))
  if (d < 1 || from.getUTCMonth() !== mo - 1) return undefined
  return { from, to: new Date(Date.UTC(y, mo - 1, d + 1)), kind: "day" }
}

const JSON_TYPES: Record<ReadingColumn["sql"], string> = {
  text: "string",
  timestamptz: "datetime",
  integer: "integer",
  bigint: "integer",
  boolean: "boolean",
}

/**
 * The data dictionary: the reading fields in file order, each a Frictionless Table Schema field
 * descriptor (name, type, description, constraints.required) with its UCUM unit and OBIS code.
 */
export function dictionary(license: ExportLicense) {
  return {
    name: "citymeter-readings",
    title: "Smart meter interval readings",
    description:
      "One row per meter and interval: water, electricity and pressure channels a meter measures, empty where it " +
      "measures none. Files are per UTC day or month of the interval start (ts), meter by meter, oldest first.",
    licenses: [{ name: license.name, ...(license.url ? { path: license.url } : {}) }],
    formats: {
      csv: "RFC 4180, comma-separated, a header row of the field names, CRLF line ends, ISO 8601 UTC times, empty cell = null",
      ndjson: "one JSON object per line (the field names below), ISO 8601 UTC times, null where not measured",
    },
    schema: {
      fields: READING_COLUMNS.map((c) => ({
        name: c.key,
        type: JSON_TYPES[c.sql],
        description: describeColumn(c),
        constraints: { required: !c.nullable },
        ...(c.unit ? { unit: c.unit } : {}),
        ...(c.obis ? { obis: c.obis } : {}),
      })),
      primaryKey: ["meterId", "boot", "seq", "idx"],
    },
  }
}

const cell = (v: unknown) => (v === null || v === undefined ? "" : v instanceof Date ? v.toISOString() : String(v))
const csvLine = (r: ReadingRow) => CSV_COLUMNS.map((c) => cell(r[c])).join(",") + "\r\n"
const ndjsonLine = (r: ReadingRow) => JSON.stringify({ ...r, ts: r.ts.toISOString() }) + "\n"

/** The period's readings of every meter, as text chunks (one per batch of the store's query). */
async function* exportChunks(store: Store, from: Date, to: Date, format: Format): AsyncGenerator<string | Uint8Array> {
  if (format === "csv") yield CSV_COLUMNS.join(",") + "\r\n"
  yield* store.exportLines(from, to, format, EXPORT_PAGE)
}

/**
 * The export's former path, one query per meter and keyset page (meterIds(), then readings()),
 * its lines built here from ReadingRows: kept so that tests and bench/export.ts compare the
 * streamed query's bytes and time with it (a Store's exportLines, in their Proxy).
 */
export async function* perMeterLines(store: Store, from: Date, to: Date, format: Format): AsyncGenerator<string> {
  const line = format === "csv" ? csvLine : ndjsonLine
  for (const meterId of await store.meterIds()) {
    let after: string | undefined
    do {
      const page = await keysetPage({
        fetch: (f, limit) => store.readings(meterId, { from: f, to, limit }),
        key: (r) => [r.ts.getTime(), r.boot, r.seq, r.idx],
        from,
        after,
        limit: EXPORT_PAGE,
      })
      if (page.rows.length) yield page.rows.map(line).join("")
      after = page.next ?? undefined
    } while (after)
  }
}

/** Months from the first meter's first_seen to now, newest first, each with its days so far. */
function periods(first: Date | null, now: Date) {
  if (!first) return []
  const out: { period: string; days: string[] }[] = []
  const ym = (d: Date) => d.toISOString().slice(0, 7)
  for (let m = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)); ym(m) >= ym(first);) {
    const days: string[] = []
    for (let d = new Date(m); d.getUTCMonth() === m.getUTCMonth() && d <= now; d = new Date(d.getTime() + 86400_000))
      if (d.toISOString().slice(0, 10) >= first.toISOString().slice(0, 10)) days.push(d.toISOString().slice(0, 10))
    out.push({ period: ym(m), days })
    m = new Date(Date.UTC(m.getUTCFullYear(), m.getUTCMonth() - 1, 1))
  }
  return out
}

export async function exportRoutes(app: FastifyInstance, { store, exportLicense }: RouteContext) {
  const license = exportLicense ?? DEFAULT_EXPORT_LICENSE
  const links = () =>
    [`</export/dictionary.json>; rel="describedby"`, ...(license.url ? [`<${license.url}>; rel="license"`] : [])].join(
      ", ",
    )
  const licensed = (reply: FastifyReply) => reply.header("link", links()).header("x-license", license.name)

  app.get(
    "/export",
    {
      schema: {
        tags: ["export"],
        summary: "The bulk export's index: periods available (UTC months and days), file URLs, licence, dictionary",
        querystring: NO_QUERY,
        response: ERROR_RESPONSES,
      },
    },
    async (_req, reply) => {
      licensed(reply)
      const now = new Date()
      const file = (p: string, f: Format) => `/export/readings/${p}.${f}`
      return {
        license: dictionary(license).licenses[0],
        dictionary: "/export/dictionary.json",
        formats: Object.keys(FORMATS),
        months: periods(await store.firstSeen(), now).map((m) => ({
          period: m.period,
          complete: parsePeriod(m.period)!.to <= now,
          csv: file(m.period, "csv"),
          ndjson: file(m.period, "ndjson"),
          days: m.days.map((d) => ({
            period: d,
            complete: parsePeriod(d)!.to <= now,
            csv: file(d, "csv"),
            ndjson: file(d, "ndjson"),
          })),
        })),
      }
    },
  )

  app.get(
    "/export/dictionary.json",
    {
      schema: {
        tags: ["export"],
        summary:
          "Data dictionary of the export: fields in file order with type, meaning, UCUM unit, OBIS code; licence",
        querystring: NO_QUERY,
        response: ERROR_RESPONSES,
      },
    },
    async (_req, reply) => {
      licensed(reply)
      return dictionary(license)
    },
  )

  app.get<{ Params: { file: string } }>(
    "/export/readings/:file",
    {
      schema: {
        tags: ["export"],
        summary: "Every meter's readings of one UTC month (YYYY-MM) or day (YYYY-MM-DD), as .csv or .ndjson, streamed",
        description:
          "For example /export/readings/2026-12.csv or /export/readings/2026-12-05.ndjson. Rows by meter id, then " +
          "time. The Link header points to the dictionary (rel=describedby) and the licence (rel=license); " +
          "X-License names it. A period not over yet gives what is stored so far. Should the data tier fail while " +
          "a file streams, the response is cut off without its final chunk: a client sees an error, never a short file.",
        params: {
          type: "object",
          properties: { file: { type: "string", maxLength: 40 } },
          required: ["file"],
        },
        querystring: NO_QUERY,
        response: ERROR_RESPONSES,
      },
    },
    async (req, reply) => {
      const m = /^(.+)\.(csv|ndjson)$/.exec(req.params.file)
      if (!m)
        throw errors.CM_ERR_BAD_QUERY(
          `export file '${req.params.file}' must be <period>.csv or <period>.ndjson, the period YYYY-MM or YYYY-MM-DD`,
        )
      const p = parsePeriod(m[1])
      if (!p)
        throw errors.CM_ERR_BAD_QUERY(
          `export period '${m[1]}' must be a UTC month YYYY-MM or day YYYY-MM-DD from 1970 on (e.g. 2026-12, 2026-12-05)`,
        )
      if (p.from > new Date()) throw errors.CM_ERR_BAD_QUERY(`export period '${m[1]}' has not begun`)
      const format = m[2] as Format
      const stream = Readable.from(exportChunks(store, p.from, p.to, format), { objectMode: false })
      stream.on("error", (err) => req.log.error({ err, period: m[1] }, "export stream failed; response cut off"))
      licensed(reply)
      return reply
        .header("content-type", FORMATS[format])
        .header("content-disposition", `attachment; filename="citymeter-readings-${m[1]}.${format}"`)
        .send(stream)
    },
  )
}
