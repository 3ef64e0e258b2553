// The bulk open-data export on both stacks: per UTC day and month, CSV and NDJSON, streamed as
// one query per file across batches; the index of periods; the data dictionary generated from
// store/columns.ts (units, OBIS codes); the utility's licence in the dictionary and the headers;
// a bad period is a clear 400.
import { randomBytes } from "node:crypto"
import { Writable } from "node:stream"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { CSV_COLUMNS, buildApp } from "../../bridge/src/api.js"
import { createMetrics } from "../../bridge/src/metrics.js"
import { EXPORT_PAGE } from "../../bridge/src/routes/export.js"
import { startService, type Service } from "../../bridge/src/service.js"
import { READING_COLUMNS } from "../../bridge/src/store/columns.js"
import type { ReadingRow } from "../../bridge/src/store/store.js"
import { STACKS, stackServices, captureLog, dropSchema, uid, type ApiReading } from "../helpers.js"
import { readingRow } from "../../testkit/rows.js"
import { insertReadings } from "../../testkit/store-writes.js"

const DAY = 86400_000
/** Midnight UTC two days ago. */
const T0 = Math.floor(Date.now() / DAY) * DAY - 2 * DAY
const dayOf = (t: number) => new Date(t).toISOString().slice(0, 10)
const monthOf = (t: number) => new Date(t).toISOString().slice(0, 7)
const LICENSE = { name: "ODbL-1.0", url: "https://opendatacommons.org/licenses/odbl/1-0/" }

function rows(meterId: string, boot: number, seq: number, start: number, n: number, stepS: number): ReadingRow[] {
  return Array.from({ length: n }, (_, i) =>
    readingRow(meterId, new Date(start + i * stepS * 1000), {
      intervalS: stepS,
      boot,
      seq,
      idx: i,
      volumeMl: i % 7,
      waterTotalMl: 1000 + i,
      energyWh: i % 3,
      energyTotalWh: 5000 + i,
      powerW: -20 + (i % 50),
      voltageDv: 2300,
    }),
  )
}

describe.each(STACKS)("bulk export on %s", (kind) => {
  let svc: Service
  const schema = `t_${randomBytes(6).toString("hex")}`
  const big = uid("exp-big")
  const small = uid("exp-small")
  const get = (url: string) => svc.app.inject({ url })
  /** The oracle: a meter's readings in [from, to) through the per-meter API. */
  const apiRange = async (meterId: string, from: number, to: number) => {
    const q = `from=${new Date(from).toISOString()}&to=${new Date(to).toISOString()}&limit=100000`
    return (await get(`/meters/${meterId}/readings?${q}`)).json().readings as ApiReading[]
  }

  beforeAll(async () => {
    svc = await startService({
      ...stackServices(kind, schema),
      demo: true,
      // only our meters: other suites publish on the shared Mosquitto, and a demo bridge would register theirs
      autoRegister: false,
      clientId: uid("exp-bridge"),
      log: captureLog().log,
      httpPort: 0,
      exportLicense: LICENSE,
      inactivityCheckMs: 60_000,
    })
    const at = new Date()
    for (const id of [big, small]) await svc.store.registerMeter(id, new Date(T0 - DAY))
    // more readings in one day than one export page: the stream crosses pages
    const n = EXPORT_PAGE + 1200
    await insertReadings(svc.store, { meterId: big, boot: 1, seq: 1 }, rows(big, 1, 1, T0, n, 10), at)
    // the day before and the day after T0's day
    await insertReadings(svc.store, { meterId: small, boot: 1, seq: 1 }, rows(small, 1, 1, T0 - 3600_000, 4, 900), at)
    await insertReadings(svc.store, { meterId: small, boot: 1, seq: 2 }, rows(small, 1, 2, T0 + DAY, 4, 900), at)
  })
  afterAll(async () => {
    await svc?.stop()
    if (kind !== "embedded") await dropSchema(schema)
  })

  test("a day as CSV: the readings API's header and rows, every meter, nothing outside the day", async () => {
    const res = await get(`/export/readings/${dayOf(T0)}.csv`)
    expect(res.statusCode, res.body).toBe(200)
    expect(res.headers["content-type"]).toBe("text/csv; charset=utf-8; header=present")
    expect(res.headers["content-disposition"]).toBe(`attachment; filename="citymeter-readings-${dayOf(T0)}.csv"`)
    const lines = res.body.split("\r\n")
    expect(lines.pop()).toBe("")
    expect(lines[0]).toBe(CSV_COLUMNS.join(","))
    const body = lines.slice(1).map((l) => l.split(","))
    const col = (name: string) => CSV_COLUMNS.indexOf(name as (typeof CSV_COLUMNS)[number])
    const expected = [
      ...(await apiRange(big, T0, T0 + DAY)).map((r) => [big, r]),
      ...(await apiRange(small, T0, T0 + DAY)).map((r) => [small, r]),
    ] as [string, ApiReading][]
    expect(expected.length).toBe(EXPORT_PAGE + 1200 + 0)
    expect(body.length).toBe(expected.length)
    // meter by meter (meter id order), oldest first; the values the readings API gives
    const ids = [big, small].sort()
    const ordered = ids.flatMap((id) => expected.filter(([m]) => m === id))
    body.forEach((cells, i) => {
      const [m, r] = ordered[i]
      expect(cells[col("meterId")]).toBe(m)
      expect(cells[col("ts")]).toBe(r.ts)
      expect(cells[col("powerW")]).toBe(String(r.powerW))
      expect(cells[col("reverseMl")]).toBe("")
    })
    for (const cells of body) {
      const t = Date.parse(cells[col("ts")])
      expect(t >= T0 && t < T0 + DAY).toBe(true)
    }
  })

  test("a month as NDJSON: one reading object per line, the dictionary's fields, every meter's month", async () => {
    const month = monthOf(T0)
    const from = Date.parse(`${month}-01T00:00:00Z`)
    const to = new Date(from)
    to.setUTCMonth(to.getUTCMonth() + 1)
    const res = await get(`/export/readings/${month}.ndjson`)
    expect(res.statusCode).toBe(200)
    expect(res.headers["content-type"]).toBe("application/x-ndjson; charset=utf-8")
    const objs = res.body
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
    const expected =
      (await apiRange(big, from, to.getTime())).length + (await apiRange(small, from, to.getTime())).length
    expect(objs.length).toBe(expected)
    expect(Object.keys(objs[0])).toEqual(READING_COLUMNS.map((c) => c.key))
    expect(new Set(objs.map((o) => o.meterId))).toEqual(new Set([big, small]))
    const dict = (await get("/export/dictionary.json")).json()
    expect(Object.keys(objs[0])).toEqual(dict.schema.fields.map((f: { name: string }) => f.name))
  })

  test("a file is streamed (chunked), not built whole, over real HTTP", async () => {
    const res = await fetch(`${svc.httpUrl}/export/readings/${dayOf(T0)}.ndjson`)
    expect(res.headers.get("transfer-encoding")).toBe("chunked")
    expect(res.headers.get("content-length")).toBeNull()
    let chunks = 0
    let lines = 0
    const reader = res.body!.getReader()
    const decoder = new TextDecoder()
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      chunks++
      lines += decoder.decode(value).split("\n").length - 1
    }
    expect(lines).toBe(EXPORT_PAGE + 1200)
    expect(chunks).toBeGreaterThan(1)
  })

  test("the data dictionary: fields from columns.ts with units and OBIS codes; the utility's licence", async () => {
    const res = await get("/export/dictionary.json")
    const d = res.json()
    expect(d.licenses).toEqual([{ name: LICENSE.name, path: LICENSE.url }])
    const byName = Object.fromEntries(d.schema.fields.map((f: { name: string }) => [f.name, f]))
    expect(byName.energyTotalWh).toMatchObject({ type: "integer", unit: "W.h", obis: "1-0:1.8.0" })
    expect(byName.powerW).toMatchObject({ unit: "W", obis: "1-0:1.7.0" })
    expect(byName.voltageDv).toMatchObject({ unit: "dV", obis: "1-0:32.7.0" })
    expect(byName.ts).toMatchObject({ type: "datetime", constraints: { required: true } })
    expect(byName.volumeMl).toMatchObject({ unit: "mL", constraints: { required: false } })
    expect(d.schema.fields.map((f: { name: string }) => f.name)).toEqual([...CSV_COLUMNS])
    expect(res.headers["x-license"]).toBe(LICENSE.name)
    expect(res.headers.link).toContain(`<${LICENSE.url}>; rel="license"`)
    // the API's OpenAPI description reads the same column descriptions
    const doc = (await get("/openapi.json")).json()
    const reading =
      doc.paths["/meters/{id}/readings"].get.responses["200"].content["application/json"].schema.properties.readings
        .items
    expect(reading.properties.energyTotalWh.description).toBe(byName.energyTotalWh.description)
    expect(reading.properties.energyTotalWh.description).toMatch(/^\[W\.h\] OBIS 1-0:1\.8\.0 /)
    expect(Object.keys(reading.properties)).toEqual(CSV_COLUMNS.filter((c) => c !== "meterId"))
    const file = await get(`/export/readings/${dayOf(T0)}.csv`)
    expect(file.headers["x-license"]).toBe(LICENSE.name)
    expect(file.headers.link).toContain(`</export/dictionary.json>; rel="describedby"`)
  })

  test("the index lists months and days from the first meter on, with their files", async () => {
    const idx = (await get("/export")).json()
    expect(idx.license).toEqual({ name: LICENSE.name, path: LICENSE.url })
    const month = idx.months.find((m: { period: string }) => m.period === monthOf(T0))
    expect(month).toMatchObject({ csv: `/export/readings/${monthOf(T0)}.csv` })
    const day = month.days.find((d: { period: string }) => d.period === dayOf(T0))
    expect(day).toEqual({
      period: dayOf(T0),
      complete: true,
      csv: `/export/readings/${dayOf(T0)}.csv`,
      ndjson: `/export/readings/${dayOf(T0)}.ndjson`,
    })
    expect(idx.months[0].period).toBe(monthOf(Date.now()))
    expect(idx.months[0].complete).toBe(false)
    // each listed file answers
    expect((await get(day.ndjson)).statusCode).toBe(200)
  })

  test("a data tier failing mid-file cuts the response off (no short file that looks whole), logged", async () => {
    // the same data tier, its file query failing after its first batch: that batch streams first
    const failing = new Proxy(svc.store, {
      get(target, key) {
        const value = Reflect.get(target, key, target) as unknown
        if (key !== "exportLines") return typeof value === "function" ? value.bind(target) : value
        return async function* (...args: Parameters<typeof target.exportLines>) {
          for await (const lines of target.exportLines(...args)) {
            yield lines
            throw Object.assign(new Error("connection lost"), { code: "57P01" })
          }
        }
      },
    })
    const lines: string[] = []
    const stream = new Writable({
      write(chunk, _enc, cb) {
        lines.push(String(chunk))
        cb()
      },
    })
    const app = buildApp({ store: failing, metrics: createMetrics(), logger: { level: "error", stream } })
    const url = await app.listen({ port: 0, host: "127.0.0.1" })
    try {
      const res = await fetch(`${url}/export/readings/${dayOf(T0)}.ndjson`)
      expect(res.status).toBe(200)
      await expect(res.text()).rejects.toThrow()
      expect(lines.some((l) => l.includes("export stream failed"))).toBe(true)
      // the bridge goes on answering
      expect((await fetch(`${url}/export/dictionary.json`)).status).toBe(200)
    } finally {
      await app.close()
    }
  })

  test("a bad period or format is a 400 that says what to send", async () => {
    for (const f of ["2026-13.csv", "2026-02-30.ndjson", "2026-12.xml", "latest.csv", "2026-1.csv", "1969-12.csv"]) {
      const res = await get(`/export/readings/${f}`)
      expect(res.statusCode, f).toBe(400)
      expect(res.json().error).toBe("CM_ERR_BAD_QUERY")
      expect(res.json().message).toMatch(/YYYY-MM/)
    }
    const future = await get(`/export/readings/${new Date(Date.now() + 40 * DAY).toISOString().slice(0, 7)}.csv`)
    expect(future.statusCode).toBe(400)
    expect(future.json().message).toMatch(/has not begun/)
  })
})
