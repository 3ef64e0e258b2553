// Issue 23 item 6: GET /meters/:id/device-log, the meter's device log streamed to the operator over
// its WSSK link (0x90 DMESG) as server-sent events. The real firmware runs in the simulator's VM and
// its runtime links to the bridge's own WSSK endpoint (as in wssk-link.test.ts). Checked: ops scope
// only, 404/409/503 before a stream, the device's own lines arrive, the bounds end a stream with
// `event: end`, one stream per meter, a hostile line forges no event, nothing of a line is logged.
import { randomBytes } from "node:crypto"
import pino from "pino"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { buildApp } from "../../bridge/src/api.js"
import { createMetrics } from "../../bridge/src/metrics.js"
import { startService, type Service } from "../../bridge/src/service.js"
import { WSSK, connectionString } from "../../bridge/src/wssk/protocol.js"
import { SimMeter } from "../../sim/src/meter.js"
import { freePort } from "../../testkit/infra.js"
import { captureLog, uid, waitFor } from "../helpers.js"
import { parseSse, type SseEvent } from "../../testkit/sse.js"

const OPS = "ops-token-devlog"
const READ = "read-token-devlog"
const ops = { authorization: `Bearer ${OPS}` }

/** An open device log stream: its raw text so far, parsed on demand, and its end. */
interface Stream {
  text: () => string
  events: () => SseEvent[]
  lines: () => { at: string; line: string }[]
  end: () => { reason: string; lines: number; bytes: number } | undefined
  closed: Promise<void>
  abort: () => void
}

async function openStream(url: string): Promise<Stream> {
  const ac = new AbortController()
  const res = await fetch(url, { headers: ops, signal: ac.signal })
  expect(res.status).toBe(200)
  expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/)
  let text = ""
  const decoder = new TextDecoder()
  const closed = (async () => {
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>)
        text += decoder.decode(chunk, { stream: true })
    } catch {
      // aborted
    }
  })()
  const events = () => parseSse(text)
  return {
    text: () => text,
    events,
    lines: () =>
      events()
        .filter((e) => e.event === "line")
        .map((e) => JSON.parse(e.data)),
    end: () => {
      const e = events().find((x) => x.event === "end")
      return e ? JSON.parse(e.data) : undefined
    },
    closed,
    abort: () => ac.abort(),
  }
}

describe("GET /meters/:id/device-log", () => {
  let svc: Service
  const { log, lines: logged } = captureLog()
  beforeAll(async () => {
    svc = await startService({
      demo: true,
      databaseUrl: "pglite:memory",
      embeddedMqttPort: 0,
      httpPort: 0,
      clientId: uid("devlog-bridge"),
      apiTokens: { ops: OPS, read: READ },
      wssk: { port: 0, host: "127.0.0.1", handshakeMs: 2000 },
      log,
    })
  })
  afterAll(async () => {
    await svc?.stop()
  })
  const metric = async (m: { get(): Promise<{ values: { value: number }[] }> }) => (await m.get()).values[0]?.value ?? 0

  test("ops scope only; 404, 409 and 503 before a stream; the device's lines stream, bounded, one stream per meter, hostile lines forge nothing", async () => {
    const wssk = svc.wssk!
    const meterId = uid("devlog")
    const key = randomBytes(32)
    expect((await svc.app.inject({ method: "PUT", url: `/meters/${meterId}`, headers: ops })).statusCode).toBe(201)
    const setKey = await svc.app.inject({
      method: "PUT",
      url: `/meters/${meterId}/link-key`,
      headers: ops,
      payload: { key: key.toString("hex") },
    })
    expect(setKey.statusCode).toBe(200)
    const get = (path: string, headers: Record<string, string> = ops) =>
      svc.app.inject({ method: "GET", url: path, headers })
    const url = `/meters/${meterId}/device-log`

    // the token: none, or a read token, is refused before anything else
    const refused: Record<string, string>[] = [{}, { authorization: `Bearer ${READ}` }]
    for (const headers of refused) {
      const r = await get(url, headers)
      expect([401, 403]).toContain(r.statusCode)
      expect(r.json().error).toBe("CM_ERR_UNAUTHORIZED")
    }
    expect((await get(`/meters/${uid("ghost")}/device-log`)).json().error).toBe("CM_ERR_NOT_FOUND")
    for (const q of ["seconds=0", "seconds=601", "maxLines=0", "maxLines=10001", "seconds=1e2"])
      expect((await get(`${url}?${q}`)).statusCode, q).toBe(400)
    expect((await get(`${url}?lines=5`)).json().error).toBe("CM_ERR_UNKNOWN_KEY")
    // no link yet: 409, saying how to get one
    const noLink = await get(url)
    expect(noLink.statusCode).toBe(409)
    expect(noLink.json().error).toBe("CM_ERR_NO_LINK")
    expect(noLink.json().message).toContain(`POST /meters/${meterId}/update-window`)
    // a bridge process without the WSSK endpoint: 503
    const bare = buildApp({
      store: svc.store,
      metrics: createMetrics(),
      apiTokens: { ops: OPS },
      log: pino({ level: "silent" }),
    })
    try {
      const r = await bare.inject({ method: "GET", url, headers: ops })
      expect(r.statusCode).toBe(503)
      expect(r.json().error).toBe("CM_ERR_NO_WSSK")
    } finally {
      await bare.close()
    }

    // documented: ops scope, the bounds, the error codes
    const doc = (await get("/openapi.json", {})).json()
    const op = doc.paths["/meters/{id}/device-log"].get
    expect(op.security).toEqual([{ bearer: [] }])
    expect(op.parameters.map((x: { name: string }) => x.name)).toEqual(expect.arrayContaining(["seconds", "maxLines"]))
    const codes = op.responses["4XX"].content["application/json"].schema.properties.error.enum
    for (const c of ["CM_ERR_NO_LINK", "CM_ERR_NO_WSSK", "CM_ERR_DEVICE_LOG_BUSY"]) expect(codes).toContain(c)

    const meter = new SimMeter({
      meterId,
      water: "register",
      // no broker: the firmware's MQTT reconnects (each takes the VM's one socket for a moment) are all it does
      settings: { MQTT_HOST: "127.0.0.1", MQTT_PORT: await freePort() },
    })
    /** Runs fn with the meter's link up; a run whose link a firmware reconnect took is run again. */
    const onLink = async <T>(what: string, fn: () => Promise<T | "link_closed">): Promise<T> => {
      for (let lost = 0; ; lost++) {
        await waitFor(`the meter's link (${what})`, async () => wssk.isUp(meterId), 60_000, 20)
        const r = await fn()
        if (r !== "link_closed") return r
        if (lost >= 5) throw new Error(`${what}: the link closed ${lost + 1} times`)
      }
    }
    const base = `${svc.httpUrl}${url}`
    try {
      await meter.start()
      await meter.waitForLine(/citymeter: runtime cloud link disarmed/, 60_000)
      await meter.setCloudConnectionString(connectionString(wssk.url, meterId, key))

      // a stream of 8 s: the runtime's own line, a hostile line, a second stream refused, then `end: time`
      const marker = `evil-${randomBytes(4).toString("hex")}`
      const first = await onLink("a stream", async () => {
        const s = await openStream(`${base}?seconds=8`)
        await waitFor(
          "the device's own log line",
          async () => !!s.end() || s.lines().some((l) => /streaming: 0x2/.test(l.line)),
          30_000,
          20,
        )
        if (s.end()?.reason === "link_closed") return "link_closed"
        expect(await metric(svc.metrics.deviceLogStreams)).toBe(1)
        const again = await get(`${url}?seconds=5`)
        expect(again.statusCode).toBe(429)
        expect(again.json().error).toBe("CM_ERR_DEVICE_LOG_BUSY")
        expect(again.headers["retry-after"]).toBeDefined()
        // a device line that tries to end its event and forge others (CR, LF, CRLF)
        const hostile = `${marker}\r\r\ndata: forged\r\nevent: end\r\ndata: {"reason":"forged"}\r\n\r\n${marker}-x\u0000\u001b[2J${"y".repeat(2000)}\n`
        wssk.link(meterId)?.deliver(Buffer.concat([Buffer.from([WSSK.Dmesg]), Buffer.from(hostile)]))
        await s.closed
        if (s.end()?.reason === "link_closed") return "link_closed"
        return s
      })
      const events = first.events()
      // every event is a line or the one end, last; every line is JSON {at, line} of one text line
      expect(events.filter((e) => e.event !== "line").map((e) => e.event)).toEqual(["end"])
      expect(events.at(-1)?.event).toBe("end")
      expect(first.end()).toMatchObject({ reason: "time" })
      const got = first.lines()
      for (const l of got) {
        expect(Object.keys(l).sort()).toEqual(["at", "line"])
        expect(new Date(l.at).toISOString()).toBe(l.at)
        expect(l.line.length).toBeLessThanOrEqual(512)
        // eslint-disable-next-line no-control-regex
        expect(l.line).not.toMatch(/[\u0000-\u0008\u000a-\u001f\u007f]/)
      }
      expect(got.some((l) => /streaming: 0x2/.test(l.line))).toBe(true)
      const evil = got.filter((l) => l.line.includes(marker))
      expect(evil.length).toBe(2)
      expect(evil[1].line.length).toBe(512)
      expect(first.end()?.lines).toBe(got.length)
      // the raw text: `event:` fields are ours only
      expect(first.text().match(/^event: .*$/gm)).toEqual([...got.map(() => "event: line"), "event: end"])

      // maxLines ends a stream after that many lines, and the device is told to stop (0x90, mask 0)
      const sent: string[] = []
      const capped = await onLink("a capped stream", async () => {
        const link = wssk.link(meterId)!
        const send = link.send.bind(link)
        link.send = (cmd, payload) => {
          sent.push(`${cmd.toString(16)}:${payload?.toString("hex") ?? ""}`)
          return send(cmd, payload)
        }
        const s = await openStream(`${base}?maxLines=1&seconds=60`)
        await s.closed
        return s.end()?.reason === "link_closed" ? "link_closed" : s
      })
      expect(capped.end()).toMatchObject({ reason: "lines", lines: 1 })
      expect(capped.lines().length).toBe(1)
      expect(sent.filter((c) => c.startsWith("90:"))).toEqual(["90:0200", "90:0000"])

      // a client that leaves ends its stream
      await onLink("a stream the client leaves", async () => {
        const s = await openStream(`${base}?seconds=600`)
        await waitFor("the stream's first line", async () => !!s.end() || s.lines().length > 0, 30_000, 20)
        if (s.end()?.reason === "link_closed") return "link_closed"
        s.abort()
        await waitFor(
          "the stream's end logged",
          async () => logged.some((l) => l.msg === "device log stream ended" && l.reason === "client_gone"),
          30_000,
          20,
        )
        return true
      })
      await waitFor("no stream open", async () => (await metric(svc.metrics.deviceLogStreams)) === 0, 10_000, 20)
      expect(await metric(svc.metrics.deviceLogLines)).toBeGreaterThanOrEqual(got.length + 1)

      // logged: who and when, the reason and the count; never a line
      const starts = logged.filter((l) => l.msg === "device log stream started")
      const ends = logged.filter((l) => l.msg === "device log stream ended")
      expect(starts.length).toBeGreaterThanOrEqual(3)
      expect(ends.length).toBe(starts.length)
      expect(ends.every((l) => l.meterId === meterId && typeof l.lines === "number")).toBe(true)
      const reasons = new Set(ends.map((l) => l.reason as string))
      expect([...reasons].filter((r) => !["time", "lines", "client_gone", "link_closed"].includes(r))).toEqual([])
      for (const r of ["time", "lines", "client_gone"]) expect(reasons.has(r), r).toBe(true)
      const allLogs = JSON.stringify(logged)
      expect(allLogs).not.toContain(marker)
      expect(allLogs).not.toMatch(/streaming: 0x2/)
      await meter.setCloudConnectionString("")
    } finally {
      await meter.stop()
    }
  })
})
