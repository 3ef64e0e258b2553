// Requests an outsider sends (issue 21, item 4), on both engines through app.inject: a 5xx is
// logged on the app's logger under a request id that the answer carries too, and no database text
// reaches a client; bare boolean filters, nesting beyond the depth limit, impossible dates, strings
// compared with numbers, long NGSI-LD ids and their errors, unknown export keys, and links built on
// PUBLIC_URL whatever the Host header says.
import { randomBytes } from "node:crypto"
import type { FastifyInstance, InjectOptions } from "fastify"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { buildApp } from "../../bridge/src/api.js"
import { createMetrics } from "../../bridge/src/metrics.js"
import { configFromEnv } from "../../bridge/src/service.js"
import { MAX_DEPTH } from "../../bridge/src/sta/odata-parse.js"
import { openPglite, openStore } from "../../bridge/src/store/engines.js"
import type { Store } from "../../bridge/src/store/store.js"
import { readingRow } from "../../testkit/rows.js"
import { PG_URL, captureLog, dropSchema, pgliteForTests } from "../helpers.js"
import { insertReadings } from "../../testkit/store-writes.js"

const PUBLIC = "https://data.city.example/meters"
const LONG = `m${"x".repeat(63)}` // a meter id of the longest valid length, 64
const SHORT = "edge-a"
const T0 = Date.UTC(2026, 0, 1)

const ENGINES = ["pglite", "postgres"] as const

describe.each(ENGINES)("request edges on %s", (engine) => {
  let store: Store
  let app: FastifyInstance
  const schema = `t_${randomBytes(6).toString("hex")}`
  const get = (url: string, o: Omit<InjectOptions, "url"> = {}) =>
    app.inject({ url, ...o, headers: { host: "evil.example", ...o.headers } })
  const sta = (path: string) => get(`/sta/v1.1${path}`)
  const filter = (set: string, f: string) => sta(`/${set}?$filter=${encodeURIComponent(f)}&$top=1000`)
  const badQuery = async (
    res: { statusCode: number; json(): { error?: string; message?: string } },
    needle: string,
  ) => {
    expect(res.statusCode, JSON.stringify(res.json())).toBe(400)
    expect(res.json().error).toBe("CM_ERR_BAD_QUERY")
    expect(res.json().message).toContain(needle)
  }

  beforeAll(async () => {
    store = engine === "pglite" ? await openPglite(undefined) : await openStore(PG_URL, { schema })
    for (const m of [SHORT, LONG]) {
      await store.registerMeter(m, new Date(T0))
      const rows = [10, 16, 20].map((v, idx) =>
        readingRow(m, new Date(T0 + idx * 900_000), { idx, volumeMl: v, waterTotalMl: 1000 + v }),
      )
      await insertReadings(store, { meterId: m, boot: 1, seq: 1 }, rows, new Date(T0 + 3 * 900_000))
    }
    app = buildApp({ store, metrics: createMetrics(), publicUrl: `${PUBLIC}/`, log: captureLog().log })
    await app.ready()
  })
  afterAll(async () => {
    await app?.close()
    await store?.close()
    if (engine === "postgres") await dropSchema(schema)
  })

  test("$filter=true, false, (true) and not true are conditions (OData boolean literals), not 500s", async () => {
    const ids = async (f: string) => {
      const res = await filter("Things", f)
      expect(res.statusCode, `${f}: ${res.body}`).toBe(200)
      return (res.json().value as { "@iot.id": string }[]).map((t) => t["@iot.id"]).sort()
    }
    expect(await ids("true")).toEqual([SHORT, LONG].sort())
    expect(await ids("(true)")).toEqual([SHORT, LONG].sort())
    expect(await ids("false")).toEqual([])
    expect(await ids("not true")).toEqual([])
    expect(await ids(`true and name eq '${SHORT}'`)).toEqual([SHORT])
  })

  test(`nesting deeper than ${MAX_DEPTH} levels is a 400 saying the limit; a long or-list is not deep`, async () => {
    const limit = `${MAX_DEPTH} levels`
    await badQuery(await filter("Things", `${"not ".repeat(300)}true`), limit)
    await badQuery(await filter("Things", `${"(".repeat(300)}true${")".repeat(300)}`), limit)
    await badQuery(await filter("Things", `${"not ".repeat(MAX_DEPTH)}true`), limit)
    await badQuery(
      await sta(`/Things?$orderby=${encodeURIComponent(`${"(".repeat(100)}name${")".repeat(100)}`)}`),
      limit,
    )
    // at the limit the data tier evaluates it
    expect((await filter("Things", `${"not ".repeat(MAX_DEPTH - 1)}true`)).statusCode).toBe(200)
    expect((await filter("Things", `${"(".repeat(MAX_DEPTH - 1)}true${")".repeat(MAX_DEPTH - 1)}`)).statusCode).toBe(
      200,
    )
    const list = Array.from({ length: 200 }, (_, i) => `result eq ${i}`).join(" or ")
    const res = await filter("Observations", list)
    expect(res.statusCode, res.body).toBe(200)
    expect(res.json().value.length).toBeGreaterThan(0)
  })

  test("dates and times off the calendar are 400, never read as the next month", async () => {
    await badQuery(await filter("Observations", "phenomenonTime gt 2026-02-30T00:00:00Z"), "2026-02-30T00:00:00Z")
    await badQuery(await filter("Observations", "phenomenonTime gt '2026-02-30T00:00:00Z'"), "not a date-time")
    await badQuery(await filter("Observations", "resultTime lt '2026-01-01T24:00:00Z'"), "not a date-time")
    await badQuery(await filter("Observations", "date(phenomenonTime) eq 2026-02-29"), "not a date on the calendar")
    expect((await filter("Observations", "phenomenonTime ge 2026-01-01T00:15:00+00:00")).statusCode).toBe(200)
  })

  test("a string compared with a number must be a decimal number: '0x10' is a 400, not 16", async () => {
    for (const s of ["0x10", "0b1", " 16", "Infinity", ""])
      await badQuery(await filter("Observations", `result gt '${s}'`), "is not a number")
    const results = async (f: string) =>
      ((await filter("Observations", f)).json().value as { result: number }[]).map((o) => o.result)
    // volumes 10, 16, 20 and totals 1010, 1016, 1020 of each meter
    expect((await results("result eq '16'")).length).toBe(2)
    expect((await results("result eq '1.6e1'")).length).toBe(2)
    expect((await results("result gt '1e3'")).every((r) => r > 1000)).toBe(true)
  })

  test("a value the data tier cannot evaluate is a 400 in our words, not the database's", async () => {
    const res = await filter("Things", "substring(name, 3000000000) eq 'x'")
    await badQuery(res, "a number in it is out of range")
    expect(res.body).not.toMatch(/integer out of range/i)
  })

  test("links are built on PUBLIC_URL, never on the Host header", async () => {
    const root = await sta("")
    for (const v of root.json().value as { url: string }[]) expect(v.url).toMatch(new RegExp(`^${PUBLIC}/sta/v1.1/`))
    const page = (await sta("/Observations?$top=1")).json()
    expect(page["@iot.nextLink"]).toBe(`${PUBLIC}/sta/v1.1/Observations?$top=1&$skip=1`)
    expect(page.value[0]["@iot.selfLink"]).toMatch(new RegExp(`^${PUBLIC}/sta/v1.1/Observations\\(`))
    expect(page.value[0]["Datastream@iot.navigationLink"]).toMatch(new RegExp(`^${PUBLIC}/`))
    const x = await get("/sta/v1.1/Things?$top=1", {
      headers: { host: "evil.example", "x-forwarded-host": "evil.example" },
    })
    expect(x.body).not.toContain("evil.example")
  })

  test("NGSI-LD takes a 64-character meter id, and answers every error as ProblemDetails", async () => {
    const id = `urn:ngsi-ld:WaterConsumptionObserved:${LONG}`
    const ok = await get(`/ngsi-ld/v1/entities/${id}`)
    expect(ok.statusCode, ok.body).toBe(200)
    expect(ok.json().id).toBe(id)
    const problem = async (o: InjectOptions & { url: string }, status: number, code: string) => {
      const res = await get(o.url, o)
      expect(res.statusCode, `${o.url}: ${res.body}`).toBe(status)
      expect(res.headers["content-type"]).toMatch(/^application\/json/)
      const body = res.json()
      expect(body, o.url).toMatchObject({ status, error: code, title: code })
      expect(body.type).toMatch(/^https:\/\/uri\.etsi\.org\/ngsi-ld\/errors\//)
      expect(typeof body.detail).toBe("string")
    }
    // fastify's own errors: a parameter over the router's limit, a malformed escape, no route, a wrong method
    await problem({ url: `/ngsi-ld/v1/entities/urn:ngsi-ld:X:${"m".repeat(600)}` }, 400, "CM_ERR_BAD_REQUEST")
    await problem({ url: `/ngsi-ld/v1/entities/urn:ngsi-ld:X:${"m".repeat(300)}` }, 400, "CM_ERR_BAD_REQUEST")
    await problem({ url: "/ngsi-ld/v1/entities/%zz" }, 400, "CM_ERR_BAD_REQUEST")
    await problem({ url: "/ngsi-ld/v1/subscriptions" }, 404, "CM_ERR_NOT_FOUND")
    await problem({ url: "/ngsi-ld/v1/entities", method: "POST" }, 405, "CM_ERR_METHOD_NOT_ALLOWED")
    await problem({ url: `/ngsi-ld/v1/entities/${id}?x=1` }, 400, "CM_ERR_UNKNOWN_KEY")
    // the rest of the API keeps its own shape
    expect(Object.keys((await get("/nothing")).json()).sort()).toEqual(["error", "message"])
  })

  test("export refuses unknown query keys, as the README says", async () => {
    for (const url of ["/export?x=1", "/export/dictionary.json?x=1", "/export/readings/2026-01.csv?x=1"]) {
      const res = await get(url)
      expect(res.statusCode, url).toBe(400)
      expect(res.json()).toEqual({ error: "CM_ERR_UNKNOWN_KEY", message: "unknown querystring key 'x'" })
    }
    expect((await get("/export/readings/2026-01.csv")).statusCode).toBe(200)
  })
})

describe("server errors", () => {
  const pglite = pgliteForTests()

  test("a 5xx is logged with the request id it answers in X-Request-Id and requestId, without the cause's text", async () => {
    const refused = Object.assign(new Error("value out of range: secret detail"), { code: "22003" })
    const store = new Proxy(pglite(), {
      get: (t, k) => (k === "listMeters" ? async () => Promise.reject(refused) : Reflect.get(t, k, t)),
    })
    const { log, lines } = captureLog()
    // no request logger (logger unset): the app's logger still gets the failure
    const app = buildApp({ store, metrics: createMetrics(), log })
    try {
      const res = await app.inject("/meters")
      expect(res.statusCode).toBe(500)
      const id = res.headers["x-request-id"]
      expect(id).toMatch(/^[0-9a-f-]{36}$/)
      expect(res.json()).toEqual({
        error: "CM_ERR_INTERNAL",
        message: `internal error (request ${id}; see the bridge log)`,
        requestId: id,
      })
      expect(res.body).not.toContain("secret")
      const logged = lines.filter((l) => l.reqId === id)
      expect(logged.length).toBe(1)
      expect(logged[0]).toMatchObject({ level: 50, code: "CM_ERR_INTERNAL", url: "/meters", statusCode: 500 })
      expect(JSON.stringify(logged[0].err)).toContain("secret detail")
      // a 4xx carries the id in its header only; nothing is logged for it
      const notFound = await app.inject("/meters/nobody")
      expect(notFound.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/)
      expect(Object.keys(notFound.json()).sort()).toEqual(["error", "message"])
      expect(lines.filter((l) => l.reqId === notFound.headers["x-request-id"])).toEqual([])
    } finally {
      await app.close()
    }
  })

  test("/readyz with the data tier down says so without the driver's words, which go to the log", async () => {
    const store = await openPglite(undefined)
    await store.close()
    const { log, lines } = captureLog()
    const app = buildApp({ store, metrics: createMetrics(), log })
    try {
      const res = await app.inject("/readyz")
      expect(res.statusCode).toBe(503)
      expect(res.json()).toEqual({
        ok: false,
        error: "CM_ERR_STORE_DOWN",
        message: "the data tier is unavailable: it does not answer (the cause is in the bridge log)",
      })
      const logged = lines.filter((l) => l.reqId === res.headers["x-request-id"])
      expect(logged.length).toBe(1)
      expect(logged[0].err).toBeTruthy()
    } finally {
      await app.close()
    }
  })

  test("a 5xx a route answers by itself (/readyz) is logged too", async () => {
    const { log, lines } = captureLog()
    const app = buildApp({
      store: pglite(),
      metrics: createMetrics(),
      log,
      ingestHealth: () => ({ subscribed: false, stalled: true, oldestUnackedS: 0, reason: "no uplink subscription" }),
    })
    try {
      const res = await app.inject("/readyz")
      expect(res.statusCode).toBe(503)
      expect(lines.filter((l) => l.reqId === res.headers["x-request-id"] && l.statusCode === 503).length).toBe(1)
    } finally {
      await app.close()
    }
  })

  test("PUBLIC_URL is read and checked; unset, links follow the listen address", async () => {
    expect(configFromEnv({ PUBLIC_URL: "https://data.city.example/meters/" }).publicUrl).toBe(
      "https://data.city.example/meters",
    )
    expect(configFromEnv({}).publicUrl).toBeUndefined()
    for (const bad of ["data.city.example", "ftp://x.example", "https://x.example/?a=1"])
      expect(() => configFromEnv({ PUBLIC_URL: bad }), bad).toThrow(/PUBLIC_URL/)
    const app = buildApp({ store: pglite(), metrics: createMetrics(), log: captureLog().log })
    try {
      const url = await app.listen({ port: 0, host: "127.0.0.1" })
      const res = await fetch(`${url}/sta/v1.1`, { headers: { host: "evil.example" } })
      const body = (await res.json()) as { value: { url: string }[] }
      expect(body.value[0].url).toBe(`${url}/sta/v1.1/Things`)
    } finally {
      await app.close()
    }
  })
})
