// The HTTP API's edges: authentication before validation, strict dates, types and keys,
// a data tier that is down, one error shape for everything fastify itself answers, SensorThings ids
// that are looked up, capped dead-letter pages, the meter registry and readiness. The app runs on
// an embedded PGlite store through app.inject; no broker is involved.
import { createHash } from "node:crypto"
import type { FastifyInstance, InjectOptions } from "fastify"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { BODY_LIMIT, buildApp } from "../../bridge/src/api.js"
import { errors } from "../../bridge/src/errors.js"
import type { IngestHealth } from "../../bridge/src/health.js"
import { createMetrics } from "../../bridge/src/metrics.js"
import { MAX_TIME, MIN_TIME, rfc3339 } from "../../bridge/src/routes/time.js"
import { openPglite } from "../../bridge/src/store/engines.js"
import type { Store } from "../../bridge/src/store/store.js"
import { METER_ID_RULE } from "../../bridge/src/topics.js"
import { addDeadLetter } from "../../testkit/store-writes.js"

const TOKEN = "edge-token"
const METER = "edge-001"
const auth = { authorization: `Bearer ${TOKEN}` }
const CODES = Object.keys(errors)

/** Every error answer: exactly { error, message } (a 5xx also its requestId), with a code from the registry. */
function expectError(res: { statusCode: number; json(): unknown }, status: number, code: string) {
  expect(res.statusCode, JSON.stringify(res.json())).toBe(status)
  const body = res.json() as Record<string, unknown>
  expect(Object.keys(body).sort()).toEqual(status >= 500 ? ["error", "message", "requestId"] : ["error", "message"])
  expect(body.error).toBe(code)
  expect(CODES).toContain(body.error)
  expect(typeof body.message).toBe("string")
  return body.message as string
}

describe("HTTP edges", () => {
  let store: Store
  let app: FastifyInstance
  let health: IngestHealth = { subscribed: true, stalled: false, oldestUnackedS: 0 }
  const req = (o: InjectOptions | string) => app.inject(o)

  beforeAll(async () => {
    store = await openPglite(undefined)
    await store.registerMeter(METER, new Date())
    app = buildApp({ store, metrics: createMetrics(), apiToken: TOKEN, ingestHealth: () => health })
    await app.ready()
  })
  afterAll(async () => {
    await app?.close()
    await store?.close()
  })

  test("a guarded route without the token is 401 whatever its body: the token is checked first", async () => {
    const url = `/meters/${METER}/config`
    const json = { "content-type": "application/json" }
    for (const o of [
      { method: "POST", url, payload: { intervalS: 0 } },
      { method: "POST", url, payload: { evil: 1 } },
      { method: "POST", url, payload: "{not json", headers: json },
      { method: "POST", url, payload: "x".repeat(BODY_LIMIT + 1), headers: json },
      { method: "POST", url, payload: "<xml/>", headers: { "content-type": "application/xml" } },
      { method: "POST", url, payload: { intervalS: 60 }, headers: { authorization: "Bearer wrong" } },
      { method: "POST", url: `/meters/${METER}/resend`, payload: {} },
      { method: "PUT", url: "/meters/new-1" },
      { method: "GET", url: "/dead-letters?limit=100000" },
      { method: "HEAD", url: "/dead-letters" },
    ] as InjectOptions[]) {
      const res = await req(o)
      expect(res.statusCode, `${o.method} ${o.url}`).toBe(401)
      expect(res.headers["www-authenticate"]).toMatch(/^Bearer/)
      if (o.method !== "HEAD") expectError(res, 401, "CM_ERR_UNAUTHORIZED")
    }
  })

  test("an API without a configured token refuses every guarded route", async () => {
    const open = buildApp({ store, metrics: createMetrics() })
    try {
      const res = await open.inject({ method: "PUT", url: "/meters/m-1", headers: auth })
      expect(expectError(res, 401, "CM_ERR_UNAUTHORIZED")).toMatch(/none is configured/)
    } finally {
      await open.close()
    }
  })

  test("strict RFC 3339: the calendar is checked, offsets are applied, years outside 1970..9999 refused", () => {
    expect(rfc3339("2024-05-01T02:00:00+02:00")?.toISOString()).toBe("2024-05-01T00:00:00.000Z")
    expect(rfc3339("2024-05-01t00:00:00.5z")?.toISOString()).toBe("2024-05-01T00:00:00.500Z")
    expect(rfc3339("2020-02-29")?.toISOString()).toBe("2020-02-29T00:00:00.000Z")
    expect(rfc3339("0099-01-01")?.getUTCFullYear()).toBe(99) // not 1999
    for (const bad of ["2020-02-30", "2021-02-29", "1900-02-29", "2020-13-01", "2020-04-31", "2020-01-01T24:00:00Z"])
      expect(rfc3339(bad), bad).toBeUndefined()
    for (const bad of ["2020-01-01T00:00:60Z", "2020-01-01T00:00:00", "2020-01-01T00:00Z", "20200101", "now", ""])
      expect(rfc3339(bad), bad).toBeUndefined()
    expect(MIN_TIME.toISOString()).toBe("1970-01-01T00:00:00.000Z")
    expect(MAX_TIME.getUTCFullYear()).toBe(10000)
  })

  const timeRoutes = [
    `/meters/${METER}/readings`,
    `/meters/${METER}/readings/columns`,
    `/meters/${METER}/consumption?bucket=day`,
    `/meters/${METER}/consumption?bucket=15min`,
    `/alarms`,
    `/meters/${METER}/alarms`,
  ]
  const q = (route: string, param: string) => `${route}${route.includes("?") ? "&" : "?"}${param}`

  test("bad, impossible and out-of-range dates are 400 CM_ERR_BAD_TIME on every route that takes times", async () => {
    const bad = [
      "-005000-01-01T00:00:00Z", // answered 500 before
      "2020-02-30", // became 1 March before
      "275760-09-13T00:00:00Z",
      "10000-01-01",
      "9999-12-31T23:00:00-05:00", // year 10000 in UTC
      "1969-12-31T23:59:59Z",
      "2020-01-01T00:00:00", // no offset: which time zone?
      "2020-01-01T00:00:00+24:00",
      "yesterday",
      "",
    ]
    for (const route of timeRoutes)
      for (const t of bad)
        for (const name of ["from", "to"]) {
          const res = await req(q(route, `${name}=${encodeURIComponent(t)}`))
          expect(expectError(res, 400, "CM_ERR_BAD_TIME"), `${route} ${name}=${t}`).toContain(name)
        }
  })

  test("valid dates at the ends of the range are answered", async () => {
    for (const route of timeRoutes)
      for (const [from, to] of [
        ["1970-01-01", "9999-12-31T23:59:59.999Z"],
        ["2020-02-29", "2020-03-01T02:00:00+02:00"],
      ]) {
        const res = await req(q(route, `from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`))
        expect(res.statusCode, `${route} ${from} ${to}: ${res.body}`).toBe(200)
      }
    expectError(await req(q(timeRoutes[0], "from=2020-01-02&to=2020-01-01")), 400, "CM_ERR_BAD_QUERY")
  })

  test("types are never coerced: a body's text is not a number, a query integer is decimal digits", async () => {
    const post = (payload: string) =>
      req({
        method: "POST",
        url: `/meters/${METER}/config`,
        payload,
        headers: { ...auth, "content-type": "application/json" },
      })
    for (const body of ['{"leakS":"12"}', '{"intervalS":60.5}', '{"intervalS":true}', '{"batch":[2]}', "[]", '"x"'])
      expect(expectError(await post(body), 400, "CM_ERR_BAD_REQUEST"), body).toMatch(/body/)
    for (const route of ["readings", "readings/columns"])
      for (const limit of ["abc", "1.5", "1e2", "0x10", "", " 5", "-1", "0", "100001"])
        expectError(
          await req(`/meters/${METER}/${route}?limit=${encodeURIComponent(limit)}`),
          400,
          "CM_ERR_BAD_REQUEST",
        )
    expectError(await req(`/meters/${METER}/readings/columns?after=bm90IGEgY3Vyc29y`), 400, "CM_ERR_BAD_QUERY")
    expectError(await req(`/meters/${METER}/readings?limit=1&limit=2`), 400, "CM_ERR_BAD_REQUEST")
    expectError(await req(`/alarms?open=yes`), 400, "CM_ERR_BAD_REQUEST")
    expectError(await req(`/alarms?open=1`), 400, "CM_ERR_BAD_REQUEST")
    expect((await req(`/meters/${METER}/readings?limit=5`)).statusCode).toBe(200)
    expect((await req(`/alarms?open=true&limit=3`)).statusCode).toBe(200)
  })

  test("unknown query and body keys are 400 CM_ERR_UNKNOWN_KEY naming the key", async () => {
    for (const url of [
      `/meters/${METER}/readings?form=csv`,
      `/meters/${METER}/readings/columns?format=csv`,
      `/meters/${METER}/consumption?bucket=day&timezone=UTC`,
      `/alarms?meterId=${METER}`,
      `/readings/latest?offset=5`,
      `/sta/v1.1/Things?$apply=groupby(name)`,
      `/dead-letters?after=3`,
    ]) {
      const res = await req({ url, headers: auth })
      expect(expectError(res, 400, "CM_ERR_UNKNOWN_KEY"), url).toMatch(/unknown querystring key '[^']+'/)
    }
    const res = await req({
      method: "POST",
      url: `/meters/${METER}/config`,
      payload: { intervalS: 60, evil: "; DROP TABLE readings" },
      headers: auth,
    })
    expect(expectError(res, 400, "CM_ERR_UNKNOWN_KEY")).toBe("unknown body key 'evil'")
  })

  test("every error fastify answers itself has our shape: 404, 405, 413, 415, malformed JSON, bad URLs", async () => {
    expect(expectError(await req("/no/such/route"), 404, "CM_ERR_NOT_FOUND")).toBe("no route GET /no/such/route")
    const del = await req({ method: "DELETE", url: "/meters" })
    expectError(del, 405, "CM_ERR_METHOD_NOT_ALLOWED")
    expect(del.headers.allow).toBe("GET, HEAD")
    const patch = await req({ method: "PATCH", url: `/meters/${METER}/config`, headers: auth })
    expectError(patch, 405, "CM_ERR_METHOD_NOT_ALLOWED")
    expect(patch.headers.allow).toBe("POST")
    expect((await req({ method: "POST", url: `/meters/${METER}` })).headers.allow).toBe("GET, HEAD, PUT")
    const url = `/meters/${METER}/config`
    const json = { ...auth, "content-type": "application/json" }
    const big = JSON.stringify({ intervalS: 60, pad: "x".repeat(BODY_LIMIT) })
    expect(
      expectError(await req({ method: "POST", url, payload: big, headers: json }), 413, "CM_ERR_BODY_TOO_LARGE"),
    ).toContain(String(BODY_LIMIT))
    const xml = { ...auth, "content-type": "application/xml" }
    expectError(await req({ method: "POST", url, payload: "<x/>", headers: xml }), 415, "CM_ERR_UNSUPPORTED_MEDIA_TYPE")
    expectError(await req({ method: "POST", url, payload: "{intervalS: 60", headers: json }), 400, "CM_ERR_BAD_JSON")
    expectError(await req({ method: "POST", url, payload: "", headers: json }), 400, "CM_ERR_BAD_JSON")
    expectError(await req("/meters/%E0%A4%A"), 400, "CM_ERR_BAD_REQUEST")
    expectError(await req(`/meters/${"m".repeat(150)}`), 400, "CM_ERR_BAD_REQUEST")
    expect(expectError(await req("/meters/bad%20id"), 400, "CM_ERR_BAD_REQUEST")).toContain(METER_ID_RULE)
  })

  test("SensorThings entity ids are looked up, never used as object keys", async () => {
    expect((await req(`/sta/v1.1/Datastreams('${METER}:water')`)).statusCode).toBe(200)
    for (const key of ["constructor", "__proto__", "toString", "hasOwnProperty", "valueOf"]) {
      expectError(await req(`/sta/v1.1/Datastreams('${METER}:${key}')`), 404, "CM_ERR_NOT_FOUND")
      expectError(await req(`/sta/v1.1/Datastreams('${METER}:${key}')/Observations`), 404, "CM_ERR_NOT_FOUND")
      expectError(await req(`/sta/v1.1/Things('${key}')`), 404, "CM_ERR_NOT_FOUND")
    }
    expectError(await req(`/sta/v1.1/Things('..')/Datastreams`), 404, "CM_ERR_NOT_FOUND")
  })

  test("the registry: PUT /meters/:id is 201 when new, 200 when known, and checks the one id grammar", async () => {
    const put = (id: string, o: Partial<InjectOptions> = {}) =>
      req({ method: "PUT", url: `/meters/${id}`, headers: auth, ...o })
    const first = await put("reg-7.w1")
    expect(first.statusCode).toBe(201)
    expect(first.json()).toEqual({ meterId: "reg-7.w1", created: true, policy: "sealed" })
    const again = await put("reg-7.w1")
    expect(again.statusCode).toBe(200)
    expect(again.json()).toEqual({ meterId: "reg-7.w1", created: false, policy: "sealed" })
    expect((await req("/meters/reg-7.w1")).json()).toMatchObject({ meterId: "reg-7.w1", online: false })
    for (const bad of [".x", "..x", "-x", "_x", "CON", "nul.txt", "a%2Fb", "a%23b", "a%2Bb", "m".repeat(65)])
      expect(expectError(await put(bad), 400, "CM_ERR_BAD_REQUEST"), bad).toContain(METER_ID_RULE)
    expectError(await put("reg-8", { payload: { owner: "x" } }), 400, "CM_ERR_UNKNOWN_KEY")
    expectError(await put("reg-8", { payload: { key: "00" } }), 400, "CM_ERR_BAD_REQUEST")
    expect((await req("/meters/reg-8")).statusCode).toBe(404)
    // a sealing key is imported with the token, and never answered back
    const key = "ab".repeat(32)
    expect((await put("reg-9", { payload: { key } })).json()).toEqual({
      meterId: "reg-9",
      created: true,
      policy: "sealed",
    })
    expect((await store.getMeter("reg-9"))!.seal).toMatchObject({
      policy: "sealed",
      key: new Uint8Array(32).fill(0xab),
    })
    const shown = await req("/meters/reg-9")
    expect(shown.json()).toMatchObject({ meterId: "reg-9", sealPolicy: "sealed" })
    expect(shown.body).not.toContain(key)
    expect((await req("/meters")).body).not.toContain(key)
    expect((await put("reg-10", { payload: { policy: "open" } })).json().policy).toBe("open")
  })

  test("dead letters: token, capped keyset pages with a next cursor, the payload's first 512 B only", async () => {
    const big = Buffer.alloc(2000, 0xab)
    big[0] = 0x01
    const payloads = [Buffer.from([1, 2, 3]), big, Buffer.from("x"), Buffer.alloc(600, 7), Buffer.from([0])]
    for (const [i, payload] of payloads.entries())
      await addDeadLetter(
        store,
        {
          topic: `citymeter/v1/dl-${i}/up/readings`,
          meterId: `dl-${i}`,
          reason: "CM_ERR_DECODE",
          detail: `#${i}`,
          payload,
        },
        new Date(),
      )
    const page = async (qs: string) => {
      const res = await req({ url: `/dead-letters?${qs}`, headers: auth })
      expect(res.statusCode, res.body).toBe(200)
      return res.json() as { deadLetters: Record<string, unknown>[]; next: number | null }
    }
    const p1 = await page("limit=2")
    expect(p1.deadLetters.map((d) => d.detail)).toEqual(["#4", "#3"])
    expect(p1.next).toBe(p1.deadLetters[1].id)
    const p2 = await page(`limit=2&before=${p1.next}`)
    expect(p2.deadLetters.map((d) => d.detail)).toEqual(["#2", "#1"])
    const p3 = await page(`limit=2&before=${p2.next}`)
    expect(p3.deadLetters.map((d) => d.detail)).toEqual(["#0"])
    expect(p3.next).toBeNull()
    const row = p2.deadLetters[1]
    expect(Object.keys(row).sort()).toEqual(
      [
        "id",
        "receivedAt",
        "topic",
        "meterId",
        "reason",
        "detail",
        "payloadHead",
        "payloadBytes",
        "payloadSha256",
        "storedSha256",
      ].sort(),
    )
    expect(row).toMatchObject({
      topic: "citymeter/v1/dl-1/up/readings",
      meterId: "dl-1",
      reason: "CM_ERR_DECODE",
      payloadHead: big.subarray(0, 512).toString("hex"),
      payloadBytes: 2000,
      payloadSha256: createHash("sha256").update(big).digest("hex"),
      storedSha256: null,
    })
    expect(Date.now() - Date.parse(row.receivedAt as string)).toBeLessThan(60_000)
    expect((await page("")).deadLetters).toHaveLength(5) // default page: 100
    expect((await page("limit=500")).deadLetters).toHaveLength(5)
    expectError(await req({ url: "/dead-letters?limit=501", headers: auth }), 400, "CM_ERR_BAD_REQUEST")
  })

  test("/readyz fails with a code when ingest is unsubscribed or stalled; /healthz stays 200", async () => {
    health = { subscribed: true, stalled: false, oldestUnackedS: 0.2 }
    const ok = await req("/readyz")
    expect(ok.statusCode).toBe(200)
    expect(ok.json()).toEqual({ ok: true, engine: "pglite", ingest: health })
    health = { subscribed: false, stalled: true, oldestUnackedS: 0, reason: "no uplink subscription" }
    const unsubscribed = await req("/readyz")
    expect(unsubscribed.statusCode).toBe(503)
    expect(unsubscribed.json()).toMatchObject({
      ok: false,
      error: "CM_ERR_INGEST_STALLED",
      message: "no uplink subscription",
      subscribed: false,
    })
    health = { subscribed: true, stalled: true, oldestUnackedS: 42 }
    const stalled = await req("/readyz")
    expect(stalled.statusCode).toBe(503)
    expect(stalled.json()).toMatchObject({ ok: false, error: "CM_ERR_INGEST_STALLED", oldestUnackedS: 42 })
    expect(stalled.json().message).toMatch(/42 s/)
    expect((await req("/healthz")).statusCode).toBe(200)
    health = { subscribed: true, stalled: false, oldestUnackedS: 0 }
  })

  test("the OpenAPI description marks every guarded route and documents the error shape", async () => {
    const doc = (await req("/openapi.json")).json()
    expect(doc.paths["/dead-letters"].get.security).toEqual([{ bearer: [] }])
    expect(doc.paths["/meters/{id}"].put.security).toEqual([{ bearer: [] }])
    expect(doc.paths["/meters/{id}"].get.security).toBeUndefined()
    const err = doc.paths["/meters/{id}/readings"].get.responses["4XX"].content["application/json"].schema
    expect(err.properties.error.enum).toEqual(CODES)
  })
})

describe("HTTP errors from the data tier", () => {
  test("each code is declared once under its own name, with a 4xx or 5xx status", () => {
    for (const [name, e] of Object.entries(errors)) {
      expect(e.code).toBe(name)
      expect(e.statusCode).toBeGreaterThanOrEqual(400)
      expect(e.statusCode).toBeLessThan(600)
    }
  })

  test("a data tier that is down answers 503 CM_ERR_STORE_DOWN; liveness stays 200", async () => {
    const store = await openPglite(undefined)
    await store.registerMeter(METER, new Date())
    await store.close()
    const app = buildApp({ store, metrics: createMetrics(), apiToken: TOKEN })
    try {
      for (const o of [
        { url: "/meters" },
        { url: `/meters/${METER}` },
        { url: `/meters/${METER}/readings?from=2024-01-01` },
        { url: "/alarms?open=true" },
        { url: "/readings/latest" },
        { url: `/sta/v1.1/Things('${METER}')` },
        { url: "/dead-letters", headers: auth },
        { method: "PUT", url: "/meters/down-1", headers: auth },
      ] as InjectOptions[]) {
        const res = await app.inject(o)
        expectError(res, 503, "CM_ERR_STORE_DOWN")
        expect(res.headers["retry-after"]).toBe("5")
      }
      const ready = await app.inject("/readyz")
      expect(ready.statusCode).toBe(503)
      expect(ready.json()).toMatchObject({ ok: false, error: "CM_ERR_STORE_DOWN" })
      expect((await app.inject("/healthz")).statusCode).toBe(200)
    } finally {
      await app.close()
    }
  })

  test("a statement the data tier refuses is 500 CM_ERR_INTERNAL, without its details", async () => {
    const real = await openPglite(undefined)
    const refused = Object.assign(new Error("value out of range: secret detail"), { code: "22003" })
    const store = new Proxy(real, {
      get: (t, k) => (k === "listMeters" ? async () => Promise.reject(refused) : Reflect.get(t, k, t)),
    })
    const app = buildApp({ store, metrics: createMetrics() })
    try {
      const message = expectError(await app.inject("/meters"), 500, "CM_ERR_INTERNAL")
      expect(message).not.toContain("secret")
      expect((await app.inject(`/meters/${METER}`)).statusCode).toBe(404) // the rest still answers
    } finally {
      await app.close()
      await real.close()
    }
  })
})

describe("scoped tokens", () => {
  let store: Store
  let app: FastifyInstance
  const tokens = { read: "r-token", write: "w-token", ops: "o-token" }
  const as = (t: string | undefined) => (t ? { authorization: `Bearer ${t}` } : {})
  beforeAll(async () => {
    store = await openPglite(undefined)
    await store.registerMeter(METER, new Date())
    app = buildApp({ store, metrics: createMetrics(), apiTokens: tokens })
    await app.ready()
  })
  afterAll(async () => {
    await app?.close()
    await store?.close()
  })

  test("each route needs its scope: write for downlinks, ops for the registry and dead letters, read for data", async () => {
    const config = (t?: string) =>
      app.inject({ method: "POST", url: `/meters/${METER}/config`, payload: { intervalS: 60 }, headers: as(t) })
    const register = (t?: string) => app.inject({ method: "PUT", url: "/meters/scoped-1", headers: as(t) })
    const letters = (t?: string) => app.inject({ url: "/dead-letters", headers: as(t) })
    const meters = (t?: string) => app.inject({ url: "/meters", headers: as(t) })
    // write: past authentication (no downlink wired here: 503), but not the ops or read routes
    expectError(await config(tokens.write), 503, "CM_ERR_NO_DOWNLINK")
    for (const t of [undefined, tokens.ops, tokens.read]) expectError(await config(t), 401, "CM_ERR_UNAUTHORIZED")
    // ops: the registry and dead letters
    expect((await register(tokens.ops)).statusCode).toBe(201)
    expect((await letters(tokens.ops)).statusCode).toBe(200)
    for (const t of [undefined, tokens.write, tokens.read]) {
      expectError(await register(t), 401, "CM_ERR_UNAUTHORIZED")
      expectError(await letters(t), 401, "CM_ERR_UNAUTHORIZED")
    }
    // read: with a read token configured, data reads need it; liveness, readiness and metrics stay open
    expect((await meters(tokens.read)).statusCode).toBe(200)
    expect((await meters(tokens.write)).statusCode).toBe(200) // write and ops tokens read too
    for (const t of [undefined, "nope"]) expectError(await meters(t), 401, "CM_ERR_UNAUTHORIZED")
    // every guarded read says how to authenticate, NGSI-LD's (own error shape) and SensorThings' too
    for (const url of ["/meters", "/ngsi-ld/v1/entities?type=WaterConsumptionObserved", "/sta/v1.1/Things"]) {
      const res = await app.inject({ url })
      expect(res.statusCode, url).toBe(401)
      expect(res.headers["www-authenticate"], url).toMatch(/^Bearer/)
      expect(res.json().error, url).toBe("CM_ERR_UNAUTHORIZED")
    }
    for (const url of ["/healthz", "/readyz", "/metrics"]) expect((await app.inject({ url })).statusCode).toBe(200)
  })
})
