// The bridge's caps (issue 21, item 3): HTTP connections (503 past the cap, closed past twice it)
// and slow clients; live-event streams (503 past the cap) and a reader that does not read;
// rejected frames logged per reason and interval rather than one line each; retained messages the
// embedded broker keeps (size, topic tree).
import { connect, type Socket } from "node:net"
import mqtt from "mqtt"
import { describe, expect, test } from "vitest"
import { buildApp } from "../../bridge/src/api.js"
import { LiveBus } from "../../bridge/src/live.js"
import { configFromEnv } from "../../bridge/src/service.js"
import { startEmbeddedBroker } from "../../bridge/src/broker.js"
import { Ingest } from "../../bridge/src/ingest/index.js"
import { createMetrics } from "../../bridge/src/metrics.js"
import { upTopic } from "../../bridge/src/topics.js"
import { readingRow } from "../../testkit/rows.js"
import { captureLog, pgliteForTests, uid, waitFor } from "../helpers.js"

/** A raw TCP client of the API: what it received, and whether the server closed it. */
function rawClient(port: number) {
  const socket = connect(port, "127.0.0.1")
  const c = { socket, data: "", closed: false }
  socket.on("data", (d) => (c.data += String(d)))
  socket.on("close", () => (c.closed = true))
  socket.on("error", () => {})
  return c
}
const connected = (s: Socket) => new Promise<void>((r) => (s.connecting ? s.once("connect", () => r()) : r()))
const sum = async (
  c: { get(): Promise<{ values: { value: number; labels: Record<string, unknown> }[] }> },
  reason: string,
) => (await c.get()).values.filter((v) => v.labels.reason === reason).reduce((n, v) => n + v.value, 0)

test("the caps are read from the environment, and refused unless positive integers", () => {
  expect(configFromEnv({ HTTP_MAX_CONNECTIONS: "50", LIVE_MAX_CLIENTS: "7" }).httpLimits).toMatchObject({
    maxConnections: 50,
    liveMaxClients: 7,
  })
  for (const [name, raw] of [
    ["HTTP_MAX_CONNECTIONS", "0"],
    ["LIVE_MAX_BUFFER_BYTES", "1e6"],
    ["HTTP_IDLE_TIMEOUT_MS", "-1"],
  ])
    expect(() => configFromEnv({ [name]: raw }), name).toThrow(name)
  expect(() => configFromEnv({ HTTP_HEADERS_TIMEOUT_MS: "60000", HTTP_REQUEST_TIMEOUT_MS: "30000" })).toThrow(
    /must not exceed/,
  )
  expect(() => configFromEnv({ EMBEDDED_MQTT_MAX_RETAINED_BYTES: "lots" })).toThrow("EMBEDDED_MQTT_MAX_RETAINED_BYTES")
})

const pglite = pgliteForTests()

describe("HTTP caps", () => {
  test("past HTTP_MAX_CONNECTIONS a request answers 503 with Retry-After; past twice it a connection is closed unanswered", async () => {
    const metrics = createMetrics()
    const app = buildApp({ store: pglite(), metrics, log: captureLog().log, httpLimits: { maxConnections: 3 } })
    const clients: ReturnType<typeof rawClient>[] = []
    try {
      await app.listen({ port: 0, host: "127.0.0.1" })
      const port = (app.server.address() as { port: number }).port
      const open = async () => {
        const c = rawClient(port)
        clients.push(c)
        await connected(c.socket)
        return c
      }
      for (let i = 0; i < 3; i++) await open() // idle: hold their places
      const over = await open()
      over.socket.write("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
      await waitFor("503", async () => over.closed, 5000, 20)
      expect(over.data).toMatch(/^HTTP\/1\.1 503 /)
      expect(over.data).toMatch(/\r\nretry-after: 5\r\n/i)
      expect(over.data).toMatch(/\r\nconnection: close\r\n/i)
      expect(over.data).toContain('"error":"CM_ERR_BUSY"')
      expect(await sum(metrics.httpShed, "connections")).toBe(1)
      // three more fill twice the cap; the next is closed at once without an answer
      for (let i = 0; i < 3; i++) await open()
      const dropped = await open()
      await waitFor("dropped", async () => dropped.closed, 5000, 20)
      expect(dropped.data).toBe("")
      // once the held connections go, requests are served again
      for (const c of clients) c.socket.destroy()
      await new Promise((r) => setTimeout(r, 100))
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200)
    } finally {
      for (const c of clients) c.socket.destroy()
      await app.close()
    }
  })

  test("slow clients are cut off: headers sent too slowly, and a connection idle either way", async () => {
    const app = buildApp({
      store: pglite(),
      metrics: createMetrics(),
      log: captureLog().log,
      httpLimits: { headersTimeoutMs: 500, requestTimeoutMs: 1000, idleTimeoutMs: 1500 },
    })
    try {
      await app.listen({ port: 0, host: "127.0.0.1" })
      const port = (app.server.address() as { port: number }).port
      const t0 = Date.now()
      const partial = rawClient(port)
      partial.socket.write("GET /healthz HTTP/1.1\r\nHost: x\r\n") // and never the blank line
      const silent = rawClient(port)
      await waitFor("both closed", async () => partial.closed && silent.closed, 10_000, 50)
      expect(Date.now() - t0).toBeLessThan(5000)
      expect(partial.data).toMatch(/^HTTP\/1\.1 408 /)
    } finally {
      await app.close()
    }
  })

  test("live events: 503 past LIVE_MAX_CLIENTS, and a stream that is not read is closed, not buffered", async () => {
    const metrics = createMetrics()
    const live = new LiveBus()
    const app = buildApp({
      store: pglite(),
      metrics,
      live,
      log: captureLog().log,
      httpLimits: { liveMaxClients: 2, liveMaxBufferBytes: 64 * 1024 },
    })
    const aborts: AbortController[] = []
    try {
      const url = await app.listen({ port: 0, host: "127.0.0.1" })
      const port = (app.server.address() as { port: number }).port
      const stream = async () => {
        const ac = new AbortController()
        aborts.push(ac)
        return fetch(`${url}/events`, { signal: ac.signal })
      }
      const [a, b] = [await stream(), await stream()]
      expect([a.status, b.status]).toEqual([200, 200])
      const third = await stream()
      expect(third.status).toBe(503)
      expect(third.headers.get("retry-after")).toBe("5")
      expect(((await third.json()) as { error: string }).error).toBe("CM_ERR_BUSY")
      expect(await sum(metrics.httpShed, "live_clients")).toBe(1)
      for (const ac of aborts) ac.abort()
      await waitFor("streams closed", async () => live.listening === 0, 5000, 20)

      // a reader that never reads: what it leaves unread outgrows the bound, and its stream is closed
      const reader = rawClient(port)
      reader.socket.write("GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
      await waitFor("subscribed", async () => live.listening === 1, 5000, 20)
      reader.socket.pause()
      const meters = Array.from({ length: 2000 }, (_, i) => `slow-${i}-${"x".repeat(40)}`)
      const row = (m: string) => readingRow(m, new Date(), { volumeMl: 1, waterTotalMl: 2 })
      for (let round = 0; round < 300 && live.listening > 0; round++) {
        live.publish(meters.map((m) => ({ kind: "reading" as const, meterId: m, reading: row(m) })))
        await new Promise((r) => setTimeout(r, 110))
      }
      expect(live.listening).toBe(0)
      expect(await sum(metrics.httpShed, "live_slow")).toBe(1)
      reader.socket.destroy()
    } finally {
      for (const ac of aborts) ac.abort()
      await app.close()
    }
  })
})

describe("rejected frames under a flood", () => {
  test("log lines are bounded per reason and interval; the metric counts every frame", async () => {
    const { log, lines } = captureLog()
    const metrics = createMetrics()
    const ingest = new Ingest(pglite(), async () => {}, metrics, log, { autoRegister: true, rejectLogIntervalMs: 300 })
    const FRAMES = 2000
    const garbage = Buffer.from("ffffffffffffffffffff", "hex")
    const flood = async (n: number) => {
      const done: Promise<unknown>[] = []
      for (let i = 0; i < n; i++) {
        done.push(ingest.handle(upTopic(uid("junk"), "readings"), garbage))
        done.push(ingest.handle(`citymeter/v1/${uid("junk")}/up/bogus`, garbage))
      }
      await Promise.all(done)
    }
    await flood(FRAMES / 2)
    const rejected = lines.filter((l) => typeof l.msg === "string" && l.msg.startsWith("frame rejected"))
    // one sample per reason, with its details
    expect(rejected.map((l) => l.reason).sort()).toEqual(["CM_ERR_DECODE", "CM_ERR_TOPIC"])
    expect(rejected.every((l) => typeof l.detail === "string" && typeof l.topic === "string")).toBe(true)
    // the interval ends: one count per reason
    await new Promise((r) => setTimeout(r, 500))
    const counts = lines.filter((l) => typeof l.count === "number")
    expect(counts.map((l) => [l.reason, l.count]).sort()).toEqual([
      ["CM_ERR_DECODE", FRAMES / 2],
      ["CM_ERR_TOPIC", FRAMES / 2],
    ])
    // the next interval starts with a sample again
    await flood(1)
    ingest.stop()
    expect(lines.filter((l) => String(l.msg).startsWith("frame rejected")).length).toBe(6)
    const metric = await metrics.framesRejected.get()
    expect(metric.values.reduce((n, v) => n + v.value, 0)).toBe(FRAMES + 2)
  })
})

describe("retained messages on the embedded broker", () => {
  test("kept only under citymeter/v1/ and up to the size limit; the others reach live subscribers, counted and logged", async () => {
    const metrics = createMetrics()
    const { log, lines } = captureLog()
    const broker = await startEmbeddedBroker(0, "127.0.0.1", { maxRetainedBytes: 1024, metrics, log })
    const clients: mqtt.MqttClient[] = []
    const connect = async () => {
      const c = await mqtt.connectAsync(broker.url, { clientId: uid("ret") })
      clients.push(c)
      return c
    }
    try {
      const live = await connect()
      const seenLive: string[] = []
      live.on("message", (topic) => seenLive.push(topic))
      await live.subscribeAsync("#", { qos: 1 })
      const pub = await connect()
      const small = Buffer.alloc(1000, 1)
      const big = Buffer.alloc(50 * 1024, 2)
      await pub.publishAsync("citymeter/v1/m-1/status", small, { qos: 1, retain: true })
      await pub.publishAsync("citymeter/v1/m-2/status", big, { qos: 1, retain: true })
      for (let i = 0; i < 5; i++) await pub.publishAsync(`junk/${i}`, small, { qos: 1, retain: true })
      await waitFor("live delivery", async () => seenLive.length === 7)

      const late = await connect()
      const kept: string[] = []
      late.on("message", (topic, _payload, packet) => packet.retain && kept.push(topic))
      await late.subscribeAsync("#", { qos: 1 })
      await new Promise((r) => setTimeout(r, 300))
      expect(kept).toEqual(["citymeter/v1/m-1/status"])

      const refused = await metrics.brokerRetainedRefused.get()
      expect(Object.fromEntries(refused.values.map((v) => [v.labels.reason, v.value]))).toEqual({
        too_large: 1,
        outside_tree: 5,
      })
      const logged = lines.filter((l) => l.msg === "retained message not kept")
      expect(logged.map((l) => l.reason).sort()).toEqual(["outside_tree", "too_large"])
      expect(logged.find((l) => l.reason === "too_large")).toMatchObject({ bytes: big.length, max: 1024 })
    } finally {
      await Promise.all(clients.map((c) => c.endAsync()))
      await broker.close()
    }
  })
})
