// The HTTP API end to end on both stacks: frames published over MQTT (as a meter would) → bridge →
// data tier → every endpoint: meter status, readings and CSV, consumption across a reboot and a
// gap, the fleet's latest readings, alarms, OpenAPI, SensorThings, token-guarded downlinks, the
// registry, dead letters and readiness. Edge cases of the HTTP layer: http-edges.test.ts.
import { createHash, randomBytes } from "node:crypto"
import mqtt from "mqtt"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { CSV_COLUMNS } from "../../bridge/src/api.js"
import { citymeter } from "../../bridge/src/gen/citymeter.js"
import { startService, type Service } from "../../bridge/src/service.js"
import { downTopic, upTopic } from "../../bridge/src/topics.js"
import { captureLog, dropSchema, STACKS, stackServices, uid, waitFor } from "../helpers.js"
import { birthFrame, uplink as up } from "../../testkit/frames.js"

const { Downlink, AlarmType } = citymeter.v1
const TOKEN = "s3cret-token"
const DAY = 86400
/** Midnight UTC two days ago: whole days and hours, safely in the past. */
const T0 = Math.floor(Date.now() / 1000 / DAY) * DAY - 2 * DAY
const iso = (s: number) => new Date(s * 1000).toISOString()

const birth = (boot: number) => birthFrame(boot, { firmware: "fw-api 1.0" })
const readings = (boot: number, seq: number, startS: number, volumes: number[], totalMl: number) =>
  up({
    boot,
    seq,
    readings: {
      startS,
      timeSynced: true,
      intervalS: 900,
      water: { totalMl, volumeMl: volumes },
      electricity: {
        totalWh: totalMl * 2,
        energyWh: volumes.map((v) => v * 2),
        powerW: volumes,
        voltageDv: volumes.map(() => 2300),
      },
    },
  })
const alarm = (seq: number, type: number, active: boolean, timeS: number) =>
  up({ boot: 2, seq, alarm: { type, active, timeS, timeSynced: true, value: seq } })

describe.each(STACKS)("HTTP API on %s", (kind) => {
  let svc: Service
  let pub: mqtt.MqttClient
  const schema = `t_${randomBytes(6).toString("hex")}`
  const meterId = uid("api")
  const other = uid("api2")
  const get = async (url: string) => svc.app.inject({ url })
  const post = (url: string, body: unknown, token?: string) =>
    svc.app.inject({
      method: "POST",
      url,
      payload: body as object,
      headers: token ? { authorization: `Bearer ${token}` } : {},
    })

  beforeAll(async () => {
    svc = await startService({
      ...stackServices(kind, schema),
      demo: true,
      clientId: uid("api-bridge"),
      log: captureLog().log,
      apiToken: TOKEN,
      inactivityCheckMs: 60_000,
    })
    pub = await mqtt.connectAsync(svc.mqttUrl, { clientId: uid("api-pub") })
    const send = (id: string, k: "birth" | "readings" | "alarm", p: Buffer) =>
      pub.publishAsync(upTopic(id, k), p, { qos: 1 })
    await send(meterId, "birth", birth(1))
    await send(meterId, "readings", readings(1, 1, T0, [10, 20, 30, 40], 1100))
    // reboot: boot 2, totals continue
    await send(meterId, "birth", birth(2))
    await send(meterId, "readings", readings(2, 1, T0 + 3600, [5, 5, 5, 5], 1120))
    // seq 2 (02:00-03:00) is lost: a gap; 180 mL were used in it
    await send(meterId, "readings", readings(2, 3, T0 + 3 * 3600, [0, 7], 1307))
    await send(meterId, "alarm", alarm(4, AlarmType.ALARM_TYPE_LEAK, true, T0 + 100))
    await send(meterId, "alarm", alarm(5, AlarmType.ALARM_TYPE_BURST, true, T0 + 200))
    await send(meterId, "alarm", alarm(6, AlarmType.ALARM_TYPE_LEAK, false, T0 + 300))
    await send(other, "readings", readings(1, 1, T0, [1], 1))
    await waitFor("frames stored", async () => {
      const v = (await svc.metrics.framesStored.get()).values
      const n = (k: string) => v.find((x) => x.labels.kind === k)?.value ?? 0
      return n("readings") >= 4 && n("alarm") >= 3 && n("birth") >= 2
    })
  })
  afterAll(async () => {
    await pub?.endAsync()
    await svc?.stop()
    if (kind !== "embedded") await dropSchema(schema)
  })

  test("meter status: online, last seen, firmware, boot count", async () => {
    const m = (await get(`/meters/${meterId}`)).json()
    expect(m).toMatchObject({
      meterId,
      online: true,
      inactive: false,
      firmware: "fw-api 1.0",
      boot: 2,
      intervalS: 900,
      batch: 4,
    })
    expect(Date.now() - Date.parse(m.lastSeen)).toBeLessThan(60_000)
    const all = (await get("/meters")).json().meters.map((x: { meterId: string }) => x.meterId)
    expect(all).toEqual(expect.arrayContaining([meterId, other]))
    expect((await get(`/meters/${uid("nope")}`)).statusCode).toBe(404)
    expect((await get(`/meters/bad%20id`)).json().error).toBe("CM_ERR_BAD_REQUEST")
    expect((await get(`/meters/${uid("nope")}`)).json().error).toBe("CM_ERR_NOT_FOUND")
  })

  test("readings by time range, and the same as CSV", async () => {
    const range = `from=${iso(T0 + 1800)}&to=${iso(T0 + 3 * 3600)}`
    const rows = (await get(`/meters/${meterId}/readings?${range}`)).json().readings
    expect(rows.map((r: { volumeMl: number }) => r.volumeMl)).toEqual([30, 40, 5, 5, 5, 5])
    const csv = await get(`/meters/${meterId}/readings?${range}&format=csv`)
    expect(csv.headers["content-type"]).toMatch(/^text\/csv/)
    expect(csv.headers["content-disposition"]).toContain(`${meterId}-readings.csv`)
    const lines = csv.body.trimEnd().split("\r\n")
    expect(lines[0]).toBe(CSV_COLUMNS.join(","))
    expect(lines).toHaveLength(7)
    const first = Object.fromEntries(lines[1].split(",").map((v, i) => [CSV_COLUMNS[i], v]))
    expect(first).toMatchObject({
      meterId,
      ts: iso(T0 + 1800),
      boot: "1",
      seq: "1",
      volumeMl: "30",
      waterTotalMl: "1060",
      energyTotalWh: "2120",
      voltageDv: "2300",
      pressureAvgPa: "",
      timeSynced: "true",
      tsEstimated: "false",
    })
    expect((await get(`/meters/${meterId}/readings?from=${iso(T0 + 60)}&to=${iso(T0)}`)).statusCode).toBe(400)
  })

  test("consumption per bucket across a reboot and a gap", async () => {
    const hours = (await get(`/meters/${meterId}/consumption?bucket=hour`)).json()
    expect(hours).toMatchObject({ meterId, bucket: "hour", tz: "UTC" })
    expect(hours.consumption).toEqual([
      { start: iso(T0), waterMl: 100, energyWh: 200, reverseMl: 0, readings: 4, gap: false },
      { start: iso(T0 + 3600), waterMl: 20, energyWh: 40, reverseMl: 0, readings: 4, gap: false }, // boot 2: totals continue
      { start: iso(T0 + 3 * 3600), waterMl: 187, energyWh: 374, reverseMl: 0, readings: 2, gap: true }, // the gap's 180 mL
    ])
    const q = (
      await get(`/meters/${meterId}/consumption?bucket=15min&from=${iso(T0 + 3600)}&to=${iso(T0 + 7200)}`)
    ).json()
    expect(q.consumption.map((c: { waterMl: number }) => c.waterMl)).toEqual([5, 5, 5, 5])
    const day = (await get(`/meters/${meterId}/consumption?bucket=day`)).json().consumption
    expect(day.map((c: { waterMl: number }) => c.waterMl)).toEqual([307])
    const month = (await get(`/meters/${meterId}/consumption?bucket=month&tz=Europe/Berlin`)).json()
    expect(month.consumption.reduce((s: number, c: { waterMl: number }) => s + c.waterMl, 0)).toBe(307)
    expect((await get(`/meters/${meterId}/consumption?bucket=week`)).statusCode).toBe(400)
    expect((await get(`/meters/${meterId}/consumption?bucket=day&tz=Mars/Olympus`)).json().error).toBe(
      "CM_ERR_BAD_QUERY",
    )
    expect((await get(`/meters/${uid("nope")}/consumption?bucket=day`)).statusCode).toBe(404)
    // the fleet by day: every meter's day, summed
    const range = `bucket=day&from=${iso(T0)}&to=${iso(T0 + 86400)}`
    const fleet = (await get(`/consumption?${range}`)).json().consumption
    const ids = (await get(`/meters`)).json().meters.map((x: { meterId: string }) => x.meterId)
    const days: Record<string, number>[] = []
    for (const id of ids) days.push(...(await get(`/meters/${id}/consumption?${range}`)).json().consumption)
    const sum = (k: string) => days.reduce((s, d) => s + d[k], 0)
    expect(fleet).toEqual([
      {
        start: iso(T0),
        waterMl: sum("waterMl"),
        energyWh: sum("energyWh"),
        reverseMl: sum("reverseMl"),
        readings: sum("readings"),
        gap: true,
        meters: days.length,
      },
    ])
    expect(fleet[0].waterMl).toBeGreaterThanOrEqual(307)
    // these meters have no district: '' is theirs, and a district's days need whole UTC days
    expect((await get(`/consumption?${range}&district=`)).json().consumption).toEqual(fleet)
    expect((await get(`/consumption?${range}&district=${uid("nowhere")}`)).json().consumption).toEqual([])
    expect((await get(`/consumption?bucket=hour&district=`)).json().error).toBe("CM_ERR_BAD_QUERY")
    expect((await get(`/consumption?bucket=15min`)).statusCode).toBe(400)
    expect((await get(`/consumption?bucket=day&from=${iso(T0 + 60)}`)).json().error).toBe("CM_ERR_BAD_QUERY")
  })

  test("latest reading of every meter in one call, with keyset pages", async () => {
    const all = (await get("/readings/latest")).json()
    const mine = all.readings.find((r: { meterId: string }) => r.meterId === meterId)
    expect(mine).toMatchObject({ ts: iso(T0 + 3 * 3600 + 900), boot: 2, seq: 3, idx: 1, waterTotalMl: 1307 })
    expect(all.readings.find((r: { meterId: string }) => r.meterId === other)).toMatchObject({ waterTotalMl: 1 })
    expect(all.next).toBeNull()
    const ids = all.readings.map((r: { meterId: string }) => r.meterId)
    expect(new Set(ids).size).toBe(ids.length)
    const page = (await get(`/readings/latest?limit=1&after=${ids[0]}`)).json()
    expect(page.readings.map((r: { meterId: string }) => r.meterId)).toEqual([ids[1]])
  })

  test("alarms: history, and open ones (raised without a later clear)", async () => {
    const history = (await get(`/meters/${meterId}/alarms`)).json().alarms
    expect(history.map((a: { type: string; active: boolean }) => [a.type, a.active])).toEqual([
      ["LEAK", true],
      ["BURST", true],
      ["LEAK", false],
    ])
    expect(history[0]).toMatchObject({ ts: iso(T0 + 100), source: "meter", boot: 2, seq: 4, value: 4 })
    const open = (await get(`/alarms?open=true&meter=${meterId}`)).json().alarms
    expect(open.map((a: { type: string }) => a.type)).toEqual(["BURST"])
    const fleet = (await get(`/alarms?open=true`)).json().alarms
    expect(fleet.some((a: { meterId: string }) => a.meterId === meterId)).toBe(true)
    expect((await get(`/meters/${meterId}/alarms?open=true&from=${iso(T0 + 300)}`)).json().alarms).toEqual([])
  })

  test("downlinks need the bearer token, validate their body and reach the meter's topic", async () => {
    const sub = await mqtt.connectAsync(svc.mqttUrl, { clientId: uid("api-meter") })
    const got: { topic: string; d: citymeter.v1.Downlink }[] = []
    sub.on("message", (topic, payload) => got.push({ topic, d: Downlink.decode(payload) }))
    await sub.subscribeAsync([downTopic(meterId, "config"), downTopic(meterId, "resend")], { qos: 1 })
    try {
      const url = `/meters/${meterId}/config`
      expect((await post(url, { intervalS: 60 })).statusCode).toBe(401)
      expect((await post(url, { intervalS: 60 }, "wrong")).json().error).toBe("CM_ERR_UNAUTHORIZED")
      expect((await post(url, { intervalS: 0 }, TOKEN)).statusCode).toBe(400)
      expect((await post(url, { batch: 500 }, TOKEN)).statusCode).toBe(400)
      expect((await post(url, { intervalS: 60, evil: "; DROP TABLE readings" }, TOKEN)).statusCode).toBe(400)
      expect((await post(url, {}, TOKEN)).statusCode).toBe(400)
      expect((await post(`/meters/${uid("nope")}/config`, { intervalS: 60 }, TOKEN)).statusCode).toBe(404)
      const ok = await post(url, { intervalS: 60, batch: 2, leakS: 3600 }, TOKEN)
      expect(ok.statusCode).toBe(202)
      expect((await post(`/meters/${meterId}/resend`, { boot: 2, fromSeq: 2 }, TOKEN)).statusCode).toBe(202)
      expect((await post(`/meters/${meterId}/resend`, { boot: 2 }, TOKEN)).statusCode).toBe(400)
      await waitFor("downlinks", async () => got.length >= 2, 10_000)
      const config = got.find((g) => g.topic === downTopic(meterId, "config"))!.d
      expect(config.body).toBe("config")
      expect(config.config).toMatchObject({ intervalS: 60, batch: 2, leakS: 3600 })
      const resend = got.find((g) => g.topic === downTopic(meterId, "resend"))!.d
      expect(resend.resend).toMatchObject({ boot: 2, fromSeq: 2 })
    } finally {
      await sub.endAsync()
    }
  })

  test("a rejected uplink is a dead letter behind the token: its head, size and hash, not the payload", async () => {
    const junk = Buffer.concat([Buffer.from([0x0a, 0xff]), randomBytes(1500)])
    await pub.publishAsync(upTopic(other, "readings"), junk, { qos: 1 })
    const sha = createHash("sha256").update(junk).digest("hex")
    const headers = { authorization: `Bearer ${TOKEN}` }
    expect((await get("/dead-letters")).statusCode).toBe(401)
    const row = await waitFor("the dead letter", async () => {
      const res = await svc.app.inject({ url: "/dead-letters?limit=10", headers })
      expect(res.statusCode).toBe(200)
      return (res.json().deadLetters as { payloadSha256: string }[]).find((d) => d.payloadSha256 === sha)
    })
    expect(row).toMatchObject({
      topic: upTopic(other, "readings"),
      meterId: other,
      reason: expect.stringMatching(/^CM_ERR_/),
      payloadHead: junk.subarray(0, 512).toString("hex"),
      payloadBytes: junk.length,
    })
    expect(row).not.toHaveProperty("payload")
  })

  test("PUT /meters/:id registers a provisioned meter once", async () => {
    const id = uid("api-reg")
    const put = (token?: string) =>
      svc.app.inject({
        method: "PUT",
        url: `/meters/${id}`,
        headers: token ? { authorization: `Bearer ${token}` } : {},
      })
    expect((await put()).statusCode).toBe(401)
    expect((await put(TOKEN)).statusCode).toBe(201)
    expect((await put(TOKEN)).statusCode).toBe(200)
    expect((await get(`/meters/${id}`)).json()).toMatchObject({ meterId: id, online: false })
  })

  test("readiness reports the data tier and the ingest pipelines", async () => {
    const res = await get("/readyz")
    expect(res.statusCode).toBe(200)
    expect(res.json()).toMatchObject({ ok: true, ingest: { subscribed: true, stalled: false } })
    expect((await get("/healthz")).json()).toEqual({ ok: true })
  })

  test("an OpenAPI description lists every endpoint and the token on writes", async () => {
    const doc = (await get("/openapi.json")).json()
    expect(doc.openapi).toBe("3.0.3")
    for (const p of [
      "/meters",
      "/meters/{id}",
      "/meters/{id}/readings",
      "/meters/{id}/consumption",
      "/consumption",
      "/readings/latest",
      "/alarms",
      "/meters/{id}/alarms",
      "/meters/{id}/config",
      "/meters/{id}/resend",
      "/dead-letters",
      "/metrics",
      "/readyz",
    ])
      expect(doc.paths, p).toHaveProperty([p])
    expect(doc.paths["/meters/{id}/config"].post.security).toEqual([{ bearer: [] }])
    expect(doc.paths["/meters/{id}/consumption"].get.parameters.map((x: { name: string }) => x.name)).toContain(
      "bucket",
    )
  })

  test("SensorThings view: the meter is a Thing with Datastreams whose Observations are its readings", async () => {
    const things = (await get("/sta/v1.1/Things?$top=1000")).json()
    expect(things.value.map((t: { "@iot.id": string }) => t["@iot.id"])).toContain(meterId)
    const thing = (await get(`/sta/v1.1/Things('${meterId}')`)).json()
    expect(thing).toMatchObject({ "@iot.id": meterId, properties: { firmware: "fw-api 1.0", boot: 2 } })
    const ds = (await get(`/sta/v1.1/Things('${meterId}')/Datastreams`)).json().value
    expect(ds.map((d: { "@iot.id": string }) => d["@iot.id"])).toContain(`${meterId}:water`)
    const water = ds.find((d: { "@iot.id": string }) => d["@iot.id"] === `${meterId}:water`)
    expect(water.unitOfMeasurement.symbol).toBe("mL")
    const obs = (await get(`/sta/v1.1/Datastreams('${meterId}:water')/Observations?$top=3&$skip=1`)).json()
    expect(obs.value.map((o: { result: number }) => o.result)).toEqual([20, 30, 40])
    expect(obs.value[0].phenomenonTime).toBe(`${iso(T0 + 900)}/${iso(T0 + 1800)}`)
    expect(obs["@iot.nextLink"]).toContain("$skip=4")
    expect((await get(`/sta/v1.1/Things('${uid("nope")}')`)).statusCode).toBe(404)
    expect((await get(`/sta/v1.1/Datastreams('${meterId}:smell')`)).statusCode).toBe(404)
  })
})
