// A stalled ingest is reported within seconds: /readyz answers 503 and the metrics say
// so, while /healthz stays up; when the cause goes away the frame is stored and readiness returns.
import { randomBytes } from "node:crypto"
import mqtt from "mqtt"
import pg from "pg"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { startService, type Service } from "../../bridge/src/service.js"
import { upTopic } from "../../bridge/src/topics.js"
import { MOSQUITTO_URL, PG_URL, dropSchema, uid, waitFor } from "../helpers.js"
import { TcpProxy } from "../../testkit/infra.js"
import { readingsFrame } from "../../testkit/frames.js"

const frame = (seq: number) => readingsFrame({ seq, startS: Math.floor(Date.now() / 1000) - 60, volumeMl: [seq] })

describe("stalled ingest on PostgreSQL", () => {
  const schema = `t_${randomBytes(6).toString("hex")}`
  let proxy: TcpProxy
  let svc: Service
  let pub: mqtt.MqttClient
  const meterId = uid("stall")
  beforeAll(async () => {
    proxy = await TcpProxy.create(Number(new URL(PG_URL).port || 5432))
    const url = new URL(PG_URL)
    url.port = String(proxy.port)
    svc = await startService({
      demo: true,
      mqttUrl: MOSQUITTO_URL,
      databaseUrl: url.toString(),
      storeOptions: { schema },
      clientId: uid("stall-bridge"),
      stallMs: 1000,
    })
    pub = await mqtt.connectAsync(MOSQUITTO_URL, { clientId: uid("pub") })
  })
  afterAll(async () => {
    await pub?.endAsync()
    proxy?.restore()
    await svc?.stop()
    await proxy?.close()
    await dropSchema(schema)
  })

  const ready = async () => (await svc.app.inject({ url: "/readyz" })).json()
  const gauge = async (name: string) =>
    Number(new RegExp(`^${name} (\\S+)$`, "m").exec(await svc.metrics.registry.metrics())?.[1])

  test("a frame blocked in the data tier is reported as a stall within seconds, then stored", async () => {
    await pub.publishAsync(upTopic(meterId, "readings"), frame(1), { qos: 1 })
    await waitFor("first frame", async () => (await svc.store.readings(meterId)).length === 1)
    expect(await ready()).toMatchObject({ ok: true })
    // another session holds the frame ledger: the next frame's commit waits
    const locker = new pg.Client({ connectionString: PG_URL, options: `-c search_path=${schema}` })
    await locker.connect()
    await locker.query("BEGIN")
    await locker.query("LOCK TABLE frames IN ACCESS EXCLUSIVE MODE")
    const t0 = Date.now()
    await pub.publishAsync(upTopic(meterId, "readings"), frame(2), { qos: 1 })
    const notReady = await waitFor("readyz 503", async () => {
      const r = await svc.app.inject({ url: "/readyz" })
      return r.statusCode === 503 ? (r.json() as { ok: boolean; error: string }) : undefined
    })
    const reportedAfterMs = Date.now() - t0
    expect(notReady).toMatchObject({ ok: false, error: "CM_ERR_INGEST_STALLED" })
    expect(reportedAfterMs).toBeLessThan(10_000)
    expect(await gauge("citymeter_ingest_stalled")).toBe(1)
    expect(await gauge("citymeter_ingest_oldest_unacked_seconds")).toBeGreaterThanOrEqual(1)
    expect((await svc.app.inject({ url: "/healthz" })).statusCode).toBe(200)
    await locker.query("ROLLBACK")
    await locker.end()
    await waitFor("second frame", async () => (await svc.store.readings(meterId)).length === 2)
    await waitFor("ready again", async () => (await ready()).ok === true)
    expect(await gauge("citymeter_ingest_stalled")).toBe(0)
  })

  test("a data tier that is down answers 503 CM_ERR_STORE_DOWN; the waiting frame is stored once it is back", async () => {
    proxy.cut()
    await pub.publishAsync(upTopic(meterId, "readings"), frame(3), { qos: 1 })
    const down = await waitFor("readyz 503", async () => {
      const r = await svc.app.inject({ url: "/readyz" })
      return r.statusCode === 503 ? (r.json() as { error: string }) : undefined
    })
    expect(down.error).toBe("CM_ERR_STORE_DOWN")
    await waitFor("stalled gauge", async () => (await gauge("citymeter_ingest_stalled")) === 1)
    proxy.restore()
    await waitFor("third frame", async () => (await svc.store.readings(meterId)).length === 3, 30_000)
    await waitFor("ready again", async () => (await ready()).ok === true, 30_000)
  })
})
