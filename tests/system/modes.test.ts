// MODE=api|ingest|all (bridge/src/roles.ts): the API and ingest as separate processes against one
// PostgreSQL schema and one (private) Mosquitto. Ingest runs as a real child process
// (bridge/src/main.ts), the API in this process; a frame published to the broker is served by
// the API, which holds no subscription, while ingest's listener serves only the probes.
import { randomBytes } from "node:crypto"
import { existsSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import mqtt from "mqtt"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { citymeter } from "../../bridge/src/gen/citymeter.js"
import { ServiceConfigError, configFromEnv, startService, type Service } from "../../bridge/src/service.js"
import { downTopic, upTopic } from "../../bridge/src/topics.js"
import { birthFrame, readingsFrame } from "../../testkit/frames.js"
import { BridgeProcess, MosquittoProcess } from "../../testkit/infra.js"
import { startNode } from "../../testkit/process.js"
import { PG_URL, captureLog, dropSchema, uid, waitFor } from "../helpers.js"

const TOKEN = "modes-token"
const schema = `t_${randomBytes(6).toString("hex")}`

const get = (base: string, path: string) => fetch(`${base}${path}`)

describe("MODE=api and MODE=ingest apart, on one PostgreSQL and one broker", () => {
  let broker: MosquittoProcess
  let api: Service
  let ingest: BridgeProcess
  let pub: mqtt.MqttClient
  const meterId = uid("apart")
  const startS = Math.floor(Date.now() / 1000) - 3600

  beforeAll(async () => {
    broker = await MosquittoProcess.create()
    pub = await mqtt.connectAsync(broker.url, { clientId: uid("meter") })
    api = await startService({
      role: "api",
      databaseUrl: PG_URL,
      storeOptions: { schema },
      mqttUrl: broker.url,
      httpPort: 0,
      apiToken: TOKEN,
      clientId: uid("api"),
      autoRegister: true, // were it to ingest, the unprovisioned test meter's frames would be stored
      log: captureLog().log,
    })
  }, 60_000)

  afterAll(async () => {
    await pub?.endAsync()
    await ingest?.stop()
    await api?.stop()
    await broker?.stop()
    if (broker) rmSync(broker.dir, { recursive: true, force: true })
    await dropSchema(schema)
  })

  test("the api process subscribes to nothing: a frame published while only it runs is never stored", async () => {
    expect(api.role).toBe("api")
    expect(api.bridge).toBeUndefined()
    expect(api.broker).toBeUndefined()
    expect(api.inactivity).toBeUndefined()
    // QoS 1, acknowledged by the broker; with no subscriber (no session either) it is dropped
    await pub.publishAsync(upTopic(meterId, "birth"), birthFrame(1), { qos: 1 })
    await pub.publishAsync(upTopic(meterId, "readings"), readingsFrame({ seq: 1, startS, totalMl: 1 }), { qos: 1 })
    await new Promise((r) => setTimeout(r, 1500))
    expect((await get(api.httpUrl!, `/meters/${meterId}`)).status).toBe(404)
    expect(await api.store.readings(meterId)).toEqual([])
  })

  test("a frame ingested by the ingest process is served by the api process", async () => {
    ingest = new BridgeProcess({
      MODE: "ingest",
      MQTT_URL: broker.url,
      MQTT_CLIENT_ID: uid("ingest"),
      DATABASE_URL: PG_URL,
      DATABASE_SCHEMA: schema,
      CITYMETER_MODE: "demo", // the test meter registers with its first frame
      INGEST_STALL_S: "2",
    })
    await ingest.start()
    expect(ingest.output.join("\n")).toContain("MODE=ingest")
    await pub.publishAsync(upTopic(meterId, "birth"), birthFrame(2), { qos: 1 })
    await pub.publishAsync(
      upTopic(meterId, "readings"),
      readingsFrame({ boot: 2, seq: 1, startS, volumeMl: [7], totalMl: 7 }),
      { qos: 1 },
    )
    const readings = await waitFor("the api serves the ingested reading", async () => {
      const res = await get(api.httpUrl!, `/meters/${meterId}/readings`)
      if (res.status !== 200) return undefined
      const body = (await res.json()) as { readings: { boot: number; seq: number; volumeMl: number }[] }
      return body.readings.length ? body.readings : undefined
    })
    expect(readings).toMatchObject([{ boot: 2, seq: 1, volumeMl: 7 }])
  })

  test("the ingest process's listener serves only the probes; its /readyz reports ingest", async () => {
    const base = ingest.apiUrl!
    expect((await get(base, "/healthz")).status).toBe(200)
    const ready = await get(base, "/readyz")
    expect(ready.status).toBe(200)
    expect(await ready.json()).toMatchObject({ ok: true, engine: "postgres", ingest: { subscribed: true } })
    const metrics = await (await get(base, "/metrics")).text()
    expect(metrics).toMatch(/citymeter_frames_stored_total\{kind="readings"\} 1/)
    // the fleet gauges the alert rules read (deploy/prometheus/alerts.yml); no data directory on PostgreSQL
    expect(metrics).toMatch(/^citymeter_meters [1-9]\d*$/m)
    expect(metrics).toMatch(/^citymeter_meters_inactive \d+$/m)
    expect(metrics).not.toMatch(/^citymeter_data_dir_free_bytes\{/m)
    for (const path of ["/meters", `/meters/${meterId}/readings`, "/sta/v1.1/Things", "/events", "/"])
      expect((await get(base, path)).status, path).toBe(404)
  })

  test("the api process: /readyz without ingest, no ingest metrics, downlinks on its own connection", async () => {
    const ready = await get(api.httpUrl!, "/readyz")
    expect(ready.status).toBe(200)
    const body = (await ready.json()) as Record<string, unknown>
    expect(body).toMatchObject({ ok: true, engine: "postgres" })
    expect(body).not.toHaveProperty("ingest")
    const metrics = await (await get(api.httpUrl!, "/metrics")).text()
    expect(metrics).toContain("citymeter_downlinks_total")
    expect(metrics).not.toContain("citymeter_ingest_stalled")
    expect(metrics).not.toContain("citymeter_frames_received_total")
    expect(metrics).not.toMatch(/^citymeter_meters/m)

    const meter = await mqtt.connectAsync(broker.url, { clientId: uid("meter-down") })
    const got: citymeter.v1.Downlink[] = []
    meter.on("message", (_t, payload) => got.push(citymeter.v1.Downlink.decode(payload)))
    await meter.subscribeAsync(downTopic(meterId, "config"), { qos: 1 })
    try {
      const res = await fetch(`${api.httpUrl}/meters/${meterId}/config`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify({ intervalS: 120 }),
      })
      expect(res.status).toBe(202)
      await waitFor("the config downlink at the meter", async () => got.length > 0, 10_000)
      expect(got[0].config).toMatchObject({ intervalS: 120 })
    } finally {
      await meter.endAsync()
    }
  })

  test("with ingest gone, the api process stays ready and keeps serving", async () => {
    await ingest.stop()
    await new Promise((r) => setTimeout(r, 2500)) // past INGEST_STALL_S of the ingest process
    expect((await get(api.httpUrl!, "/readyz")).status).toBe(200)
    expect((await get(api.httpUrl!, `/meters/${meterId}/readings`)).status).toBe(200)
  })

  test("an api process without MQTT_URL is a read-only front: downlinks answer 503 CM_ERR_NO_DOWNLINK", async () => {
    const ro = await startService({
      role: "api",
      databaseUrl: PG_URL,
      storeOptions: { schema },
      apiToken: TOKEN,
      log: captureLog().log,
    })
    try {
      expect(ro.mqttUrl).toBe("")
      const res = await ro.app.inject({
        method: "POST",
        url: `/meters/${meterId}/config`,
        headers: { authorization: `Bearer ${TOKEN}` },
        payload: { intervalS: 120 },
      })
      expect(res.statusCode).toBe(503)
      expect(res.json().error).toBe("CM_ERR_NO_DOWNLINK")
      expect((await ro.app.inject({ url: `/meters/${meterId}/readings` })).json().readings).toHaveLength(1)
    } finally {
      await ro.stop()
    }
  })
})

describe("MODE settings that cannot work are refused with what to set", () => {
  test("MODE is all by default, and only all, api or ingest", () => {
    expect(configFromEnv({}).role).toBe("all")
    expect(configFromEnv({ MODE: "api" }).role).toBe("api")
    expect(configFromEnv({ MODE: "ingest" }).role).toBe("ingest")
    expect(() => configFromEnv({ MODE: "worker" })).toThrow(ServiceConfigError)
    expect(() => configFromEnv({ MODE: "API" })).toThrow(/MODE must be one of all, api, ingest \(got 'API'\)/)
  })

  test("api and ingest need PostgreSQL; ingest needs MQTT_URL", async () => {
    const log = captureLog().log
    for (const role of ["api", "ingest"] as const) {
      const refused = startService({ role, databaseUrl: "pglite:memory", mqttUrl: "mqtt://127.0.0.1:1", log })
      await expect(refused).rejects.toThrow(ServiceConfigError)
      await expect(refused).rejects.toThrow(/needs PostgreSQL \(DATABASE_URL=postgres:\/\/…\).*MODE=all/)
    }
    const noBroker = startService({ role: "ingest", databaseUrl: PG_URL, storeOptions: { schema }, log })
    await expect(noBroker).rejects.toThrow(ServiceConfigError)
    await expect(noBroker).rejects.toThrow(/MODE=ingest .* set MQTT_URL/)
  })

  test("the bridge process exits with the message, before it opens anything", async () => {
    /** bridge/src/main.ts to its exit, killed if it is still running after 20 s (then code is null). */
    const bridgeExit = async (env: Record<string, string>) => {
      const run = startNode(["--import", "tsx", "bridge/src/main.ts"], { HTTP_PORT: "0", ...env })
      const timer = setTimeout(() => run.proc.kill("SIGKILL"), 20_000)
      const done = await run.done
      clearTimeout(timer)
      return done
    }
    const dir = join(mkdtempSync(join(tmpdir(), "cm-modes-")), "pglite")
    const run = await bridgeExit({ MODE: "api", DATABASE_URL: `pglite:${dir}` })
    expect(run.code).toBe(2)
    expect(run.stderr).toContain("MODE=api runs beside another process on one database: it needs PostgreSQL")
    expect(existsSync(dir)).toBe(false)
    rmSync(dirname(dir), { recursive: true, force: true })
    const bad = await bridgeExit({ MODE: "both" })
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain("MODE must be one of all, api, ingest (got 'both')")
  }, 60_000)
})
