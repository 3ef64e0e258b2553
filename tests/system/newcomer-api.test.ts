// The API a newcomer meets: every list route pages with `next` and never cuts a list
// silently (readings sharing a timestamp included), enum errors list the allowed values, alarm
// types are the README's names with the unit of their value, /consumption has a default bucket,
// and the OpenAPI document carries the package version.
import { randomBytes } from "node:crypto"
import { readFileSync } from "node:fs"
import mqtt from "mqtt"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { citymeter } from "../../bridge/src/gen/citymeter.js"
import { startService, type Service } from "../../bridge/src/service.js"
import { upTopic } from "../../bridge/src/topics.js"
import { captureLog, dropSchema, STACKS, stackServices, uid, waitFor } from "../helpers.js"
import { birthFrame, uplink as up } from "../../testkit/frames.js"

const { AlarmType } = citymeter.v1
const DAY = 86400
const T0 = Math.floor(Date.now() / 1000 / DAY) * DAY - 2 * DAY
const birth = (boot: number) => birthFrame(boot, { firmware: "fw 1", board: "b" })
const readings = (boot: number, seq: number, startS: number, volumes: number[], totalMl: number) =>
  up({ boot, seq, readings: { startS, timeSynced: true, intervalS: 900, water: { totalMl, volumeMl: volumes } } })
const VERSION = (
  JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }
).version

type Reading = { ts: string; boot: number; seq: number; idx: number }

describe.each(STACKS)("list routes page with next on %s", (kind) => {
  let svc: Service
  let pub: mqtt.MqttClient
  const schema = `t_${randomBytes(6).toString("hex")}`
  const meterId = uid("page")
  const other = uid("page")
  const get = async (url: string) => svc.app.inject({ url })

  beforeAll(async () => {
    svc = await startService({
      ...stackServices(kind, schema),
      demo: true,
      // the two meters are provisioned: frames of other suites' meters on the shared Mosquitto
      // are refused, so the meter list holds exactly these two
      autoRegister: false,
      clientId: uid("page-bridge"),
      log: captureLog().log,
      inactivityCheckMs: 60_000,
    })
    for (const m of [meterId, other]) await svc.store.registerMeter(m, new Date())
    pub = await mqtt.connectAsync(svc.mqttUrl, { clientId: uid("page-pub") })
    const send = (k: "birth" | "readings" | "alarm", p: Buffer) => pub.publishAsync(upTopic(meterId, k), p, { qos: 1 })
    // two boots whose frames cover the same four intervals: every timestamp holds two readings
    await send("birth", birth(1))
    await send("readings", readings(1, 1, T0, [1, 2, 3, 4], 10))
    await send("birth", birth(2))
    await send("readings", readings(2, 1, T0, [5, 6, 7, 8], 36))
    await send(
      "alarm",
      up({
        boot: 2,
        seq: 2,
        alarm: { type: AlarmType.ALARM_TYPE_BURST, active: true, timeS: T0 + 60, timeSynced: true, value: 90000 },
      }),
    )
    await pub.publishAsync(upTopic(other, "birth"), birth(1), { qos: 1 })
    await waitFor("8 readings and the alarm", async () => {
      const r = (await get(`/meters/${meterId}/readings`)).json()
      const a = (await get(`/meters/${meterId}/alarms`)).json()
      return r.readings?.length === 8 && a.alarms?.length === 1
    })
  })
  afterAll(async () => {
    await pub?.endAsync()
    await svc?.stop()
    if (kind !== "embedded") await dropSchema(schema)
  })

  test("readings: a plain call says there is no more (next null); small pages walk every reading once", async () => {
    const all = (await get(`/meters/${meterId}/readings`)).json()
    expect(all.next).toBeNull()
    const key = (r: Reading) => `${r.ts}/${r.boot}/${r.seq}/${r.idx}`
    for (const limit of [1, 3, 5]) {
      const seen: Reading[] = []
      let after: string | null = null
      let pages = 0
      do {
        const res = await get(`/meters/${meterId}/readings?limit=${limit}${after ? `&after=${after}` : ""}`)
        expect(res.statusCode).toBe(200)
        const body = res.json() as { readings: Reading[]; next: string | null }
        expect(body.readings.length).toBeLessThanOrEqual(limit)
        seen.push(...body.readings)
        after = body.next
        pages++
      } while (after && pages < 20)
      expect(seen.map(key)).toEqual(all.readings.map(key))
      expect(pages).toBe(Math.ceil(8 / limit))
    }
    // the same in CSV: the next page is in the Link header
    const csv = await get(`/meters/${meterId}/readings?format=csv&limit=5`)
    expect(csv.body.trim().split("\r\n")).toHaveLength(6)
    const link = /^<([^>]+)>; rel="next"$/.exec(String(csv.headers.link))
    expect(link).not.toBeNull()
    const rest = await get(link![1])
    expect(rest.body.trim().split("\r\n")).toHaveLength(4)
    expect(rest.headers.link).toBeUndefined()
    expect((await get(`/meters/${meterId}/readings?after=not-a-cursor`)).json()).toMatchObject({
      error: "CM_ERR_BAD_QUERY",
    })
  })

  test("meters and alarms page the same way; alarm types are the README's names, with a unit", async () => {
    const first = [meterId, other].sort()[0]
    await waitFor("both meters", async () => (await get("/meters")).json().meters.length === 2)
    const meters = (await get(`/meters?limit=1`)).json()
    expect(meters).toMatchObject({ meters: [{ meterId: first }], next: first })
    const last = (await get(`/meters?limit=1&after=${first}`)).json()
    expect(last).toMatchObject({ meters: [{ meterId: [meterId, other].sort()[1] }], next: null })
    const alarms = (await get(`/meters/${meterId}/alarms`)).json()
    expect(alarms).toMatchObject({ meterId, next: null })
    expect(alarms.alarms).toEqual([
      expect.objectContaining({ type: "BURST", active: true, value: 90000, unit: expect.stringMatching(/^mL\/min/) }),
    ])
    const page = (await get(`/alarms?meter=${meterId}&limit=1`)).json()
    expect(page.alarms).toHaveLength(1)
  })

  test("enum errors list the allowed values; consumption defaults to days", async () => {
    const bad = (await get(`/meters/${meterId}/readings?format=xml`)).json()
    expect(bad).toEqual({ error: "CM_ERR_BAD_REQUEST", message: "querystring/format must be one of: json, csv" })
    const week = (await get(`/meters/${meterId}/consumption?bucket=week`)).json()
    expect(week.message).toBe("querystring/bucket must be one of: 15min, hour, day, month")
    const plain = await get(`/meters/${meterId}/consumption`)
    expect(plain.statusCode).toBe(200)
    expect(plain.json()).toMatchObject({ meterId, bucket: "day" })
  })

  test("the OpenAPI document carries the package version and the paging parameters", async () => {
    const doc = (await get("/openapi.json")).json()
    expect(doc.info.version).toBe(VERSION)
    for (const path of ["/meters", "/meters/{id}/readings", "/alarms", "/meters/{id}/alarms"])
      expect(doc.paths[path].get.parameters.map((p: { name: string }) => p.name)).toContain("after")
  })
})
