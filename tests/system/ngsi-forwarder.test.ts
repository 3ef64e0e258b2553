// The NGSI-LD forwarder against a small NGSI-LD stub broker written here (Debian's packages hold no
// NGSI-LD broker; Orion-LD, Scorpio and Stellio are shipped as container images). On both stacks:
// readings published over MQTT reach the stub as upserts of schema-valid entities; a stub answering
// 500, or down, loses no ingest, is counted and logged, and the newest state arrives once it is
// back; a full queue drops the meter waiting longest, counted.
import { randomBytes } from "node:crypto"
import { createServer, type IncomingMessage, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import mqtt from "mqtt"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { NGSI_LD_CORE_CONTEXT, keyValues, type NgsiEntity } from "../../bridge/src/fiware.js"
import { LiveBus } from "../../bridge/src/live.js"
import { createMetrics } from "../../bridge/src/metrics.js"
import { startForwarder } from "../../bridge/src/ngsi-forwarder.js"
import { startService, type Service } from "../../bridge/src/service.js"
import { openStore } from "../../bridge/src/store/engines.js"
import type { ReadingRow } from "../../bridge/src/store/store.js"
import { upTopic } from "../../bridge/src/topics.js"
import { uplink as up } from "../../testkit/frames.js"
import { readingRow } from "../../testkit/rows.js"
import { modelValidators } from "../fiware-schemas.js"
import { STACKS, stackServices, apiReadings, captureLog, dropSchema, uid, waitFor } from "../helpers.js"

const T0 = (Math.floor(Date.now() / 86400_000) * 86400_000) / 1000 - 86400
const birth = () =>
  up({ boot: 1, seq: 0, birth: { firmware: "fw-ngsi 1.0", board: "esp32", intervalS: 900, batch: 1, uptimeS: 5 } })
const frame = (seq: number, totalMl: number) =>
  up({
    boot: 1,
    seq,
    readings: {
      startS: T0 + seq * 900,
      timeSynced: true,
      intervalS: 900,
      water: { totalMl, volumeMl: [100] },
      electricity: { totalWh: totalMl, energyWh: [100], powerW: [400], voltageDv: [2300] },
    },
  })

/** A stub NGSI-LD broker: records each upsert; answers as `mode` says. */
class StubBroker {
  mode: "ok" | "fail" | "partial" | "refuse" = "ok"
  readonly requests: {
    url: string
    headers: IncomingMessage["headers"]
    body: (NgsiEntity & Record<string, unknown>)[]
  }[] = []
  private server?: Server
  port = 0

  async start(port = 0) {
    this.server = createServer((req, res) => {
      let data = ""
      req.on("data", (c) => (data += c))
      req.on("end", () => {
        if (this.mode === "fail") {
          res.writeHead(500, { "content-type": "application/json" })
          return res.end(JSON.stringify({ type: "https://uri.etsi.org/ngsi-ld/errors/InternalError", title: "stub" }))
        }
        const body = JSON.parse(data) as { id: string; type: string }[]
        if (this.mode === "refuse") {
          res.writeHead(400, { "content-type": "application/json" })
          return res.end(JSON.stringify({ type: "https://uri.etsi.org/ngsi-ld/errors/BadRequestData", title: "stub" }))
        }
        this.requests.push({ url: req.url!, headers: req.headers, body: body as never })
        if (this.mode === "partial") {
          // NGSI-LD Batch Operation Result: the ACMeasurement entities refused
          const bad = body.filter((e) => e.type === "ACMeasurement")
          res.writeHead(207, { "content-type": "application/json" })
          return res.end(
            JSON.stringify({
              success: body.filter((e) => e.type !== "ACMeasurement").map((e) => e.id),
              errors: bad.map((e) => ({
                entityId: e.id,
                error: { type: "https://uri.etsi.org/ngsi-ld/errors/BadRequestData" },
              })),
            }),
          )
        }
        res.writeHead(204).end()
      })
    })
    await new Promise<void>((r) => this.server!.listen(port, "127.0.0.1", r))
    this.port = (this.server.address() as AddressInfo).port
  }

  async stop() {
    this.server?.closeAllConnections()
    await new Promise((r) => this.server?.close(r))
  }

  /** The newest entity the stub received with this id. */
  latest(id: string) {
    for (let i = this.requests.length - 1; i >= 0; i--) {
      const e = this.requests[i].body.find((x) => x.id === id)
      if (e) return e
    }
    return undefined
  }
}

const counter = async (svc: { metrics: ReturnType<typeof createMetrics> }, name: string, outcome: string) => {
  const m = await svc.metrics.registry.getSingleMetric(name)?.get()
  return m?.values.find((v) => v.labels.outcome === outcome)?.value ?? 0
}

describe.each(STACKS)("NGSI-LD forwarder on %s", (kind) => {
  let svc: Service
  let pub: mqtt.MqttClient
  const stub = new StubBroker()
  const v = modelValidators()
  const schema = `t_${randomBytes(6).toString("hex")}`
  const meter = uid("ngsi")
  const log = captureLog()
  let seq = 0
  const publish = async (totalMl: number) => {
    seq++
    await pub.publishAsync(upTopic(meter, "readings"), frame(seq, totalMl), { qos: 1 })
  }

  beforeAll(async () => {
    await stub.start()
    svc = await startService({
      ...stackServices(kind, schema),
      demo: true,
      // only our meters: other suites publish on the shared Mosquitto, and a demo bridge would register theirs
      autoRegister: false,
      clientId: uid("ngsi-bridge"),
      log: log.log,
      inactivityCheckMs: 60_000,
      ngsiLd: { url: `http://127.0.0.1:${stub.port}/`, flushMs: 50, maxBackoffMs: 300, timeoutMs: 1000 },
    })
    pub = await mqtt.connectAsync(svc.mqttUrl, { clientId: uid("ngsi-pub") })
    await svc.store.registerMeter(meter, new Date())
    await pub.publishAsync(upTopic(meter, "birth"), birth(), { qos: 1 })
    await waitFor("birth stored", async () => (await svc.store.getMeter(meter))?.boot === 1)
    await svc.store.setLocation(meter, { lat: 52.52, lon: 13.405, address: null, district: "Mitte" })
  })
  afterAll(async () => {
    await pub?.endAsync()
    await svc?.stop()
    await stub.stop()
    if (kind !== "embedded") await dropSchema(schema)
  })

  test("a committed reading is upserted as schema-valid WaterConsumptionObserved and ACMeasurement", async () => {
    await publish(2_000_000)
    const wid = `urn:ngsi-ld:WaterConsumptionObserved:${meter}`
    const eid = `urn:ngsi-ld:ACMeasurement:${meter}`
    const w = await waitFor("water entity at the stub", async () => stub.latest(wid))
    const e = await waitFor("electricity entity at the stub", async () => stub.latest(eid))
    const req = stub.requests.find((r) => r.body.some((x) => x.id === wid))!
    expect(req.url).toBe("/ngsi-ld/v1/entityOperations/upsert?options=update")
    expect(req.headers["content-type"]).toBe("application/ld+json")
    expect(w["@context"]).toEqual([
      "https://raw.githubusercontent.com/smart-data-models/dataModel.WaterConsumption/master/context.jsonld",
      NGSI_LD_CORE_CONTEXT,
    ])
    expect(w.waterConsumption).toMatchObject({ type: "Property", value: 2000, unitCode: "LTR" })
    expect(v.WaterConsumptionObserved(keyValues(w)), JSON.stringify(v.WaterConsumptionObserved.errors)).toBe(true)
    expect(v.ACMeasurement(keyValues(e)), JSON.stringify(v.ACMeasurement.errors)).toBe(true)
    expect(keyValues(e)).toMatchObject({ totalActiveEnergyImport: 2000, location: { coordinates: [13.405, 52.52] } })
    // the stub holds the request before the forwarder has read the answer and counted it
    await waitFor("both entities counted as sent", async () =>
      (await counter(svc, "citymeter_ngsi_entities_total", "sent")) >= 2 ? true : undefined,
    )
    expect(await counter(svc, "citymeter_ngsi_entities_total", "sent")).toBeGreaterThanOrEqual(2)
  })

  test("a broker answering 500 loses no ingest; failures are counted and logged; the newest state arrives after", async () => {
    const failedBefore = await counter(svc, "citymeter_ngsi_requests_total", "failed")
    stub.mode = "fail"
    await publish(2_100_000)
    await publish(2_200_000)
    await waitFor(
      "a failed upsert counted",
      async () => (await counter(svc, "citymeter_ngsi_requests_total", "failed")) > failedBefore,
    )
    // ingest went on: both frames stored and readable
    await waitFor("frames stored", async () => (await apiReadings(svc, meter)).length === seq)
    expect(svc.ingestHealth!().stalled).toBe(false)
    expect(log.lines.some((l) => String(l.msg).startsWith("NGSI-LD upsert failed"))).toBe(true)
    stub.mode = "ok"
    const w = await waitFor("newest water state after recovery", async () => {
      const e = stub.latest(`urn:ngsi-ld:WaterConsumptionObserved:${meter}`)
      return e && (e.waterConsumption as { value: number }).value === 2200 ? e : undefined
    })
    expect(v.WaterConsumptionObserved(keyValues(w))).toBe(true)
  })

  test("a broker that is down loses no ingest and is counted; the state arrives when it is back", async () => {
    const port = stub.port
    const failedBefore = await counter(svc, "citymeter_ngsi_requests_total", "failed")
    await stub.stop()
    await publish(2_300_000)
    await waitFor(
      "a failed upsert counted",
      async () => (await counter(svc, "citymeter_ngsi_requests_total", "failed")) > failedBefore,
    )
    await waitFor("frame stored", async () => (await apiReadings(svc, meter)).length === seq)
    expect((await svc.app.inject({ url: "/readyz" })).statusCode).toBe(200)
    // the meter waits for the next try (between tries; a try in flight holds it for a moment)
    await waitFor("the meter waiting", async () => svc.forwarder!.pending === 1)
    await stub.start(port)
    await waitFor("state after the broker is back", async () => {
      const e = stub.latest(`urn:ngsi-ld:WaterConsumptionObserved:${meter}`)
      return e && (e.waterConsumption as { value: number }).value === 2300
    })
    expect(svc.forwarder!.pending).toBe(0)
  })
})

describe.each(STACKS)("NGSI-LD forwarder refusals on %s", (kind) => {
  test("a 207 counts the entities it lists as failed and the rest as sent; a 400 drops the batch, counted, not retried", async () => {
    const stub = new StubBroker()
    await stub.start()
    const schema = `t_${randomBytes(6).toString("hex")}`
    const svc = await startService({
      ...stackServices(kind, schema),
      demo: true,
      // only our meters: other suites publish on the shared Mosquitto, and a demo bridge would register theirs
      autoRegister: false,
      clientId: uid("ngsi-bridge"),
      log: captureLog().log,
      inactivityCheckMs: 60_000,
      ngsiLd: { url: `http://127.0.0.1:${stub.port}`, flushMs: 50 },
    })
    const pub = await mqtt.connectAsync(svc.mqttUrl, { clientId: uid("ngsi-pub") })
    const meter = uid("ngsi-207")
    try {
      await svc.store.registerMeter(meter, new Date())
      await pub.publishAsync(upTopic(meter, "birth"), birth(), { qos: 1 })
      stub.mode = "partial"
      await pub.publishAsync(upTopic(meter, "readings"), frame(1, 1_000_000), { qos: 1 })
      await waitFor("a 207 counted", async () => (await counter(svc, "citymeter_ngsi_requests_total", "partial")) >= 1)
      expect(await counter(svc, "citymeter_ngsi_entities_total", "failed")).toBe(1)
      expect(await counter(svc, "citymeter_ngsi_entities_total", "sent")).toBe(1)
      stub.mode = "refuse"
      await pub.publishAsync(upTopic(meter, "readings"), frame(2, 1_100_000), { qos: 1 })
      await waitFor("a 400 counted", async () => (await counter(svc, "citymeter_ngsi_requests_total", "refused")) >= 1)
      expect(await counter(svc, "citymeter_ngsi_entities_total", "failed")).toBe(3)
      // not retried: nothing waits, and the frames are stored
      expect(svc.forwarder!.pending).toBe(0)
      expect((await apiReadings(svc, meter)).length).toBe(2)
    } finally {
      await pub.endAsync()
      await svc.stop()
      await stub.stop()
      if (kind !== "embedded") await dropSchema(schema)
    }
  })
})

describe("NGSI-LD forwarder queue", () => {
  test("bounded: past maxPending the meter waiting longest is dropped and counted; a newer reading replaces an older one", async () => {
    const store = await openStore("pglite:memory")
    await store.migrate()
    const metrics = createMetrics()
    const live = new LiveBus()
    const log = captureLog()
    // a port nothing listens on, a flush far away: the queue only fills
    const f = startForwarder({
      url: "http://127.0.0.1:9",
      store,
      metrics,
      log: log.log,
      live,
      maxPending: 2,
      flushMs: 3_600_000,
    })
    const reading = (meterId: string, t: number): ReadingRow =>
      readingRow(meterId, new Date(t), { volumeMl: 1, waterTotalMl: 1000 })
    live.publish([{ kind: "reading", meterId: "a", reading: reading("a", 1000) }])
    live.publish([{ kind: "reading", meterId: "b", reading: reading("b", 1000) }])
    live.publish([{ kind: "reading", meterId: "a", reading: reading("a", 2000) }])
    // an older reading of a (backfill) does not replace the newer one
    live.publish([{ kind: "reading", meterId: "a", reading: reading("a", 500) }])
    expect(f.pending).toBe(2)
    expect(await counter({ metrics }, "citymeter_ngsi_entities_total", "dropped")).toBe(0)
    live.publish([{ kind: "reading", meterId: "c", reading: reading("c", 1000) }])
    expect(f.pending).toBe(2)
    expect(await counter({ metrics }, "citymeter_ngsi_entities_total", "dropped")).toBe(1)
    expect(log.lines.find((l) => String(l.msg).includes("queue full"))).toMatchObject({ meterId: "b" })
    // the broker cannot be reached: the flush fails, counted, and the meters wait again
    await f.flush()
    expect(await counter({ metrics }, "citymeter_ngsi_requests_total", "failed")).toBe(1)
    expect(f.pending).toBe(2)
    await f.stop()
    await store.close()
  })
})
