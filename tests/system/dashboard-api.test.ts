// The dashboard's routes as any client sees them: meter locations behind the ops
// token, alarm acknowledgements behind the write token, districts, the operations figures equal
// to /metrics, the live event stream over a real socket, the page and /docs, and
// `citymeter provision --lat/--lon`. Browser tests: tests/system/dashboard.test.ts.
import { spawn } from "node:child_process"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import mqtt from "mqtt"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { startService, type Service } from "../../bridge/src/service.js"
import { upTopic } from "../../bridge/src/topics.js"
import { buildWeb } from "../../scripts/build-web.js"
import { captureLog, dropSchema, STACKS, stackServices, uid, waitFor } from "../helpers.js"
import { uplink as up } from "../../testkit/frames.js"

const TOKENS = { ops: "ops-tok", write: "write-tok" }
const bearer = (t: string) => ({ authorization: `Bearer ${t}` })
const bin = fileURLToPath(new URL("../../cli/bin/citymeter.js", import.meta.url))

describe.each(STACKS)("dashboard routes on %s", (kind) => {
  let svc: Service
  let pub: mqtt.MqttClient
  const schema = `t_${uid("d").replace("-", "_")}`
  beforeAll(async () => {
    await buildWeb()
    svc = await startService({
      demo: true,
      ...stackServices(kind, schema),
      clientId: uid("dash-bridge"),
      log: captureLog().log,
      httpPort: 0,
      apiTokens: TOKENS,
    })
    pub = await mqtt.connectAsync(svc.mqttUrl, { clientId: uid("dash-pub") })
  })
  afterAll(async () => {
    await pub?.endAsync()
    await svc?.stop()
    if (kind !== "embedded") await dropSchema(schema)
  })
  const inject = (url: string, o: { method?: "PUT" | "POST" | "DELETE"; payload?: object; headers?: object } = {}) =>
    svc.app.inject({ url, method: o.method ?? "GET", payload: o.payload, headers: { ...o.headers } })

  async function bornMeter(queued = 2, dropped = 1, unstored = 0) {
    const meterId = uid("dash")
    await pub.publishAsync(
      upTopic(meterId, "birth"),
      up({
        boot: 1,
        birth: { firmware: "fw", board: "b", intervalS: 60, batch: 1, uptimeS: 1, queued, dropped, unstored },
      }),
      { qos: 1 },
    )
    await waitFor("born", async () => (await inject(`/meters/${meterId}`)).json().online === true, 10_000)
    return meterId
  }

  test("a location needs the ops token, is checked, and shows in GET /meters with the birth's queue figures", async () => {
    const meterId = await bornMeter(2, 1, 3)
    const loc = { lat: 52.52, lon: 13.405, address: "Unter den Linden 1", district: "Mitte" }
    const path = `/meters/${meterId}/location`
    expect((await inject(path, { method: "PUT", payload: loc })).statusCode).toBe(401)
    expect((await inject(path, { method: "PUT", payload: loc, headers: bearer(TOKENS.write) })).statusCode).toBe(401)
    const bad = await inject(path, { method: "PUT", payload: { ...loc, lat: 91 }, headers: bearer(TOKENS.ops) })
    expect(bad.statusCode).toBe(400)
    expect(bad.json().error).toBe("CM_ERR_BAD_REQUEST")
    // text a person typed: a NUL or another control character is a 400, never the data tier's refusal
    for (const typed of [{ district: "Mit\u0000te" }, { address: "Unter\nden Linden" }]) {
      const r = await inject(path, { method: "PUT", payload: { ...loc, ...typed }, headers: bearer(TOKENS.ops) })
      expect(r.statusCode, r.body).toBe(400)
      expect(r.json().message).toMatch(/must not contain control characters/)
    }
    const nul = await inject(`/consumption?bucket=day&district=Mit%00te`)
    expect([nul.statusCode, nul.json().error]).toEqual([400, "CM_ERR_BAD_REQUEST"])
    const unknown = await inject(`/meters/${uid("nobody")}/location`, {
      method: "PUT",
      payload: loc,
      headers: bearer(TOKENS.ops),
    })
    expect(unknown.statusCode).toBe(404)
    expect((await inject(path, { method: "PUT", payload: loc, headers: bearer(TOKENS.ops) })).json()).toEqual({
      meterId,
      location: loc,
    })
    const listed = (await inject(`/meters`)).json().meters.find((m: { meterId: string }) => m.meterId === meterId)
    // issue 20: writes the meter's flash store refused (Birth.unstored) are shown with the queue figures
    expect(listed).toMatchObject({ location: loc, queued: 2, dropped: 1, unstored: 3 })
    const d = (await inject(`/districts`)).json().districts.find((x: { district: string }) => x.district === "Mitte")
    expect(d).toMatchObject({ meters: 1, online: 1, openAlarms: 0 })
    expect((await inject(path, { method: "DELETE", headers: bearer(TOKENS.ops) })).json().location).toBeNull()
  })

  test("an alarm acknowledgement needs the write token; the first is kept with who and when", async () => {
    const meterId = await bornMeter()
    await pub.publishAsync(
      upTopic(meterId, "alarm"),
      up({ boot: 1, seq: 1, alarm: { type: "ALARM_TYPE_LEAK", active: true, value: 5 } }),
      { qos: 1 },
    )
    const [edge] = await waitFor("alarm stored", async () => {
      const a = (await inject(`/meters/${meterId}/alarms`)).json().alarms
      return a.length ? a : undefined
    })
    const path = `/meters/${meterId}/alarms/${edge.boot}/${edge.seq}/ack`
    const body = { by: "Ana", note: "crew sent\nvalve closed" }
    expect((await inject(path, { method: "POST", payload: body })).statusCode).toBe(401)
    expect((await inject(path, { method: "POST", payload: body, headers: bearer(TOKENS.ops) })).statusCode).toBe(401)
    expect((await inject(path, { method: "POST", payload: {}, headers: bearer(TOKENS.write) })).statusCode).toBe(400)
    // a note keeps its line breaks, not a NUL; who acknowledged is one line
    for (const payload of [{ by: "Ana", note: "crew\u0000sent" }, { by: "A\nna" }]) {
      const r = await inject(path, { method: "POST", payload, headers: bearer(TOKENS.write) })
      expect([r.statusCode, r.json().error]).toEqual([400, "CM_ERR_BAD_REQUEST"])
    }
    const missing = `/meters/${meterId}/alarms/${edge.boot}/${edge.seq + 1}/ack`
    expect((await inject(missing, { method: "POST", payload: body, headers: bearer(TOKENS.write) })).statusCode).toBe(
      404,
    )
    const first = await inject(path, { method: "POST", payload: body, headers: bearer(TOKENS.write) })
    expect(first.statusCode).toBe(201)
    expect(first.json().ack).toMatchObject(body)
    const again = await inject(path, { method: "POST", payload: { by: "Bo" }, headers: bearer(TOKENS.write) })
    expect(again.statusCode).toBe(200)
    expect(again.json().ack).toEqual(first.json().ack)
    const [listed] = (await inject(`/alarms?open=true&meter=${meterId}`)).json().alarms
    expect(listed.ack).toEqual(first.json().ack)
  })

  test("GET /dashboard/ops gives the same figures as /metrics", async () => {
    await pub.publishAsync(upTopic(uid("dash"), "readings"), Buffer.from([0xff, 0x01]), { qos: 1 })
    await waitFor(
      "a rejected frame counted",
      async () => Object.keys((await inject(`/dashboard/ops`)).json().rejected).length > 0,
    )
    const ops = (await inject(`/dashboard/ops`)).json()
    const text = (await inject(`/metrics`)).body
    const metric = (name: string, label = "") => {
      const re = new RegExp(`^${name}${label ? `\\{${label}\\}` : ""} (\\S+)$`, "m")
      return Number(re.exec(text)?.[1])
    }
    for (const [reason, n] of Object.entries(ops.rejected))
      expect(metric("citymeter_frames_rejected_total", `reason="${reason}"`)).toBe(n)
    expect(metric("citymeter_frames_duplicate_total")).toBe(ops.duplicates)
    expect(metric("citymeter_readings_stored_total")).toBe(ops.readingsStored)
    expect(metric("citymeter_dead_letters")).toBe(ops.deadLetters)
    expect(ops.deadLetters).toBeGreaterThan(0)
  })

  test("GET /events streams a committed alarm to a client over a real socket", async () => {
    const meterId = await bornMeter()
    const ac = new AbortController()
    const res = await fetch(`${svc.httpUrl}/events`, { signal: ac.signal })
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/)
    const reader = res.body!.getReader()
    let text = ""
    const got = (async () => {
      for (;;) {
        const { value, done } = await reader.read()
        if (done) return text
        text += Buffer.from(value).toString("utf8")
        if (text.includes(`"meterId":"${meterId}"`) && text.includes("event: alarm")) return text
      }
    })()
    await pub.publishAsync(
      upTopic(meterId, "alarm"),
      up({ boot: 1, seq: 1, alarm: { type: "ALARM_TYPE_BURST", active: true, value: 9000 } }),
      { qos: 1 },
    )
    const stream = await got
    ac.abort()
    const alarm = stream
      .split("\n\n")
      .find((b) => b.startsWith("event: alarm") && b.includes(meterId))!
      .split("\ndata: ")[1]
    expect(JSON.parse(alarm).alarm).toMatchObject({
      meterId,
      type: "BURST",
      active: true,
      value: 9000,
      source: "meter",
    })
  })

  test("the page at /, its assets from the package, /docs, and OpenAPI entries for the new routes", async () => {
    const page = await inject(`/`)
    expect(page.statusCode).toBe(200)
    expect(page.body).toContain('src="ui/app.js"')
    expect(page.body).not.toMatch(/https?:\/\//) // nothing from a CDN
    expect((await inject(`/ui/app.js`)).statusCode).toBe(200)
    expect((await inject(`/docs/`)).statusCode).toBe(200)
    const paths = Object.keys((await inject(`/openapi.json`)).json().paths)
    for (const p of [
      "/events",
      "/dashboard/ops",
      "/districts",
      "/meters/{id}/location",
      "/meters/{id}/alarms/{boot}/{seq}/ack",
    ])
      expect(paths).toContain(p)
    expect(paths.some((p) => p.startsWith("/docs") || p.startsWith("/ui"))).toBe(false)
  })

  // one CLI run is enough (on the embedded stack); the route itself is tested on both above
  if (kind === "embedded")
    test("citymeter provision --lat/--lon/--district sets the location in the bridge's registry", async () => {
      const meterId = uid("cli-loc")
      const dir = join(mkdtempSync(join(tmpdir(), "cm-dash-")), "meter")
      const args = ["provision", "-m", meterId, "-b", "sim", "-u", "mqtt://127.0.0.1:1883", "--username", meterId]
      const run = (extra: string[]) =>
        new Promise<{ code: number | null; out: string }>((resolve) => {
          const p = spawn(process.execPath, [bin, ...args, "-o", dir, "--force", ...extra], {
            stdio: ["ignore", "pipe", "pipe"],
            env: { ...process.env, CITYMETER_API_TOKEN: TOKENS.ops },
          })
          let out = ""
          p.stdout.on("data", (b) => (out += b))
          p.stderr.on("data", (b) => (out += b))
          p.on("close", (code) => resolve({ code, out }))
        })
      const noBridge = await run(["--lat", "48.1", "--lon", "11.5"])
      expect(noBridge.code).toBe(2)
      expect(noBridge.out).toContain("add --bridge")
      const badLat = await run(["--bridge", svc.httpUrl!, "--lat", "123", "--lon", "11.5"])
      expect(badLat.code).toBe(2)
      const r = await run(["--bridge", svc.httpUrl!, "--lat", "48.137", "--lon", "11.575", "--district", "Altstadt"])
      expect(r.out).toContain(`located meter ${meterId}`)
      expect(r.code).toBe(0)
      expect((await inject(`/meters/${meterId}`)).json().location).toEqual({
        lat: 48.137,
        lon: 11.575,
        address: null,
        district: "Altstadt",
      })
    })
})
