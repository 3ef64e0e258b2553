// FIWARE Smart Data Models over NGSI-LD, on both stacks: frames published over MQTT →
// bridge → data tier → GET /ngsi-ld/v1/entities. Every entity, keyValues and normalized, is
// validated against the models' published JSON Schemas (vendor/smart-data-models, offline).
import { randomBytes } from "node:crypto"
import mqtt from "mqtt"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { NGSI_LD_CORE_CONTEXT, keyValues, type NgsiEntity } from "../../bridge/src/fiware.js"
import { citymeter } from "../../bridge/src/gen/citymeter.js"
import { startService, type Service } from "../../bridge/src/service.js"
import { upTopic } from "../../bridge/src/topics.js"
import { uplink as up } from "../../testkit/frames.js"
import { modelValidators, publishedExample } from "../fiware-schemas.js"
import { STACKS, stackServices, captureLog, dropSchema, uid, waitFor } from "../helpers.js"

const { AlarmType } = citymeter.v1
const DAY = 86400
const T0 = Math.floor(Date.now() / 1000 / DAY) * DAY - DAY
const birth = () =>
  up({ boot: 1, seq: 0, birth: { firmware: "fw-fiware 1.0", board: "esp32", intervalS: 900, batch: 2, uptimeS: 5 } })
const water = (seq: number, startS: number, totalMl: number) =>
  up({
    boot: 1,
    seq,
    readings: { startS, timeSynced: true, intervalS: 900, water: { totalMl, volumeMl: [500, 700] } },
  })
const power = (seq: number, startS: number, totalWh: number) =>
  up({
    boot: 1,
    seq,
    readings: {
      startS,
      timeSynced: true,
      intervalS: 900,
      electricity: { totalWh, energyWh: [100, 150], powerW: [400, 600], voltageDv: [2291, 2302] },
    },
  })
const alarm = (seq: number, type: number, timeS: number) =>
  up({ boot: 1, seq, alarm: { type, active: true, timeS, timeSynced: true, value: 1 } })

const LINK_REL = 'rel="http://www.w3.org/ns/json-ld#context"'

describe("validators from the vendored schemas", () => {
  const v = modelValidators()
  test("accept the models' published examples and refuse a broken one (the control)", () => {
    for (const m of ["WaterConsumptionObserved", "ACMeasurement"] as const) {
      expect(v[m](publishedExample(m)), JSON.stringify(v[m].errors)).toBe(true)
      expect(v[m]({ ...publishedExample(m), type: "Other" })).toBe(false)
    }
    expect(v.WaterConsumptionObserved({ ...publishedExample("WaterConsumptionObserved"), waterConsumption: 1.5 })).toBe(
      false,
    )
    // the common schema's $refs resolved offline, from the vendored copy
    expect(v.ajv.getSchema("https://smart-data-models.github.io/data-models/common-schema.json")).toBeDefined()
  })
})

describe.each(STACKS)("NGSI-LD entities on %s", (kind) => {
  let svc: Service
  let pub: mqtt.MqttClient
  const v = modelValidators()
  const schema = `t_${randomBytes(6).toString("hex")}`
  const wm = uid("fw-water")
  const em = uid("fw-elec")
  const lone = uid("fw-nowhere")
  const get = (url: string, accept?: string) => svc.app.inject({ url, headers: accept ? { accept } : {} })
  const W_ID = `urn:ngsi-ld:WaterConsumptionObserved:${wm}`
  const E_ID = `urn:ngsi-ld:ACMeasurement:${em}`

  beforeAll(async () => {
    svc = await startService({
      ...stackServices(kind, schema),
      demo: true,
      // only our meters: other suites publish on the shared Mosquitto, and a demo bridge would register theirs
      autoRegister: false,
      clientId: uid("fw-bridge"),
      log: captureLog().log,
      inactivityCheckMs: 60_000,
    })
    pub = await mqtt.connectAsync(svc.mqttUrl, { clientId: uid("fw-pub") })
    const send = (id: string, k: "birth" | "readings" | "alarm", p: Buffer) =>
      pub.publishAsync(upTopic(id, k), p, { qos: 1 })
    for (const id of [wm, em, lone]) await svc.store.registerMeter(id, new Date())
    for (const id of [wm, em, lone]) await send(id, "birth", birth())
    await send(wm, "readings", water(1, T0, 1_234_567))
    await send(wm, "readings", water(2, T0 + 1800, 1_235_767))
    await send(wm, "alarm", alarm(3, AlarmType.ALARM_TYPE_LEAK, T0 + 100))
    await send(wm, "alarm", alarm(4, AlarmType.ALARM_TYPE_BACKFLOW, T0 + 200))
    await send(em, "readings", power(1, T0, 4_321_000))
    await send(lone, "readings", power(1, T0, 10_000))
    await waitFor("frames stored", async () => {
      const vals = (await svc.metrics.framesStored.get()).values
      const n = (k: string) => vals.find((x) => x.labels.kind === k)?.value ?? 0
      return n("readings") >= 4 && n("alarm") >= 2
    })
    await svc.store.setLocation(wm, { lat: 48.8566, lon: 2.3522, address: "1 rue de Rivoli", district: "Louvre" })
    await svc.store.setLocation(em, { lat: 45.764, lon: 4.8357, address: null, district: null })
  })
  afterAll(async () => {
    await pub?.endAsync()
    await svc?.stop()
    if (kind !== "embedded") await dropSchema(schema)
  })

  test("a water meter as WaterConsumptionObserved (keyValues) validates and says what was measured", async () => {
    const res = await get(`/ngsi-ld/v1/entities?type=WaterConsumptionObserved&options=keyValues&limit=1000`)
    expect(res.statusCode, res.body).toBe(200)
    expect(res.headers["content-type"]).toMatch(/^application\/json/)
    const all = res.json() as Record<string, unknown>[]
    const e = all.find((x) => x.id === W_ID)!
    expect(e).toBeDefined()
    expect(all.every((x) => x.type === "WaterConsumptionObserved")).toBe(true)
    expect(all.some((x) => x.id === `urn:ngsi-ld:WaterConsumptionObserved:${em}`)).toBe(false)
    expect(v.WaterConsumptionObserved(e), JSON.stringify(v.WaterConsumptionObserved.errors)).toBe(true)
    expect(e).toMatchObject({
      waterConsumption: 1235, // litres: 1,235,767 mL
      location: { type: "Point", coordinates: [2.3522, 48.8566] },
      address: { streetAddress: "1 rue de Rivoli", district: "Louvre" },
      alarmInProgress: 1,
      alarmFlowPersistence: "In progress persistence",
      alarmWaterQuality: 1,
      alarmTamper: 0,
      dateObserved: new Date((T0 + 1800 + 1800) * 1000).toISOString(),
      refDevice: [`urn:ngsi-ld:Device:${wm}`],
    })
    expect(res.headers.link).toBe(
      `<https://raw.githubusercontent.com/smart-data-models/dataModel.WaterConsumption/master/context.jsonld>; ${LINK_REL}; type="application/ld+json"`,
    )
  })

  test("normalized: every attribute is an NGSI-LD Property, GeoProperty or Relationship; its simplification validates", async () => {
    const res = await get(`/ngsi-ld/v1/entities/${encodeURIComponent(W_ID)}`)
    expect(res.statusCode, res.body).toBe(200)
    const e = res.json() as NgsiEntity
    for (const [k, a] of Object.entries(e)) {
      if (k === "id" || k === "type") continue
      const attr = a as { type: string; value?: unknown; object?: unknown }
      expect(["Property", "GeoProperty", "Relationship"], k).toContain(attr.type)
      if (attr.type === "Relationship") expect(typeof attr.object).toBe("string")
      else expect(attr.value, k).toBeDefined()
    }
    expect(e.waterConsumption).toMatchObject({ type: "Property", value: 1235, unitCode: "LTR" })
    expect((e.waterConsumption as { observedAt: string }).observedAt).toBe(new Date((T0 + 3600) * 1000).toISOString())
    expect(e.location).toEqual({ type: "GeoProperty", value: { type: "Point", coordinates: [2.3522, 48.8566] } })
    expect(v.WaterConsumptionObserved(keyValues(e))).toBe(true)
    const kv = (await get(`/ngsi-ld/v1/entities/${encodeURIComponent(W_ID)}?options=keyValues`)).json()
    expect(kv).toEqual(keyValues(e))
  })

  test("an electricity meter as ACMeasurement: energy import in kWh, power, voltage L1, OBIS-coded", async () => {
    const kv = (await get(`/ngsi-ld/v1/entities/${encodeURIComponent(E_ID)}?format=simplified`)).json()
    expect(v.ACMeasurement(kv), JSON.stringify(v.ACMeasurement.errors)).toBe(true)
    expect(kv).toMatchObject({
      type: "ACMeasurement",
      phaseType: "singlePhase",
      totalActiveEnergyImport: 4321, // the register at the end of the newest interval: 4,321,000 Wh
      totalActivePower: 600,
      phaseVoltage: { L1: 230.2 },
      location: { type: "Point", coordinates: [4.8357, 45.764] },
    })
    const n = (await get(`/ngsi-ld/v1/entities/${encodeURIComponent(E_ID)}`)).json()
    expect(n.totalActiveEnergyImport).toMatchObject({ unitCode: "KWH", obis: { type: "Property", value: "1-0:1.8.0" } })
    expect(n.totalActivePower).toMatchObject({ unitCode: "WTT", obis: { value: "1-0:1.7.0" } })
    expect(n.phaseVoltage).toMatchObject({ unitCode: "VLT", obis: { value: "1-0:32.7.0" } })
    expect(v.ACMeasurement(keyValues(n))).toBe(true)
  })

  test("an electricity meter with no registered location lacks ACMeasurement's required location, and only that", async () => {
    const kv = (await get(`/ngsi-ld/v1/entities/urn:ngsi-ld:ACMeasurement:${lone}?options=keyValues`)).json()
    expect(v.ACMeasurement(kv)).toBe(false)
    expect(v.ACMeasurement.errors!.map((x) => [x.keyword, x.params])).toEqual([
      ["required", { missingProperty: "location" }],
    ])
  })

  test("application/ld+json carries @context in the body and no Link header", async () => {
    const res = await get(`/ngsi-ld/v1/entities/${encodeURIComponent(E_ID)}`, "application/ld+json")
    expect(res.headers["content-type"]).toMatch(/^application\/ld\+json/)
    expect(res.headers.link).toBeUndefined()
    expect(res.json()["@context"]).toEqual([
      "https://raw.githubusercontent.com/smart-data-models/dataModel.Energy/master/context.jsonld",
      NGSI_LD_CORE_CONTEXT,
    ])
    const list = await get(`/ngsi-ld/v1/entities?type=ACMeasurement&limit=1000`, "application/ld+json")
    expect((list.json() as Record<string, unknown>[]).every((e) => Array.isArray(e["@context"]))).toBe(true)
  })

  test("count, limit and offset page the entities; types by expanded URI; id lists; attrs", async () => {
    const all = await get(`/ngsi-ld/v1/entities?type=ACMeasurement&limit=1000&count=true`)
    const n = Number(all.headers["ngsild-results-count"])
    expect(n).toBe((all.json() as unknown[]).length)
    expect(n).toBeGreaterThanOrEqual(2)
    const ids = (all.json() as { id: string }[]).map((e) => e.id)
    const p2 = await get(`/ngsi-ld/v1/entities?type=ACMeasurement&limit=1&offset=1&count=true`)
    expect((p2.json() as { id: string }[]).map((e) => e.id)).toEqual([ids[1]])
    expect(p2.headers["ngsild-results-count"]).toBe(String(n))
    const uri = encodeURIComponent("https://smartdatamodels.org/dataModel.WaterConsumption/WaterConsumptionObserved")
    const byUri = (await get(`/ngsi-ld/v1/entities?type=${uri}&limit=1000`)).json() as { id: string }[]
    expect(byUri.map((e) => e.id)).toContain(W_ID)
    const byId = (await get(`/ngsi-ld/v1/entities?id=${W_ID},${E_ID}&options=keyValues&attrs=waterConsumption`)).json()
    // in meter id order: fw-elec-… before fw-water-…
    expect(byId).toEqual([
      { id: E_ID, type: "ACMeasurement" },
      { id: W_ID, type: "WaterConsumptionObserved", waterConsumption: 1235 },
    ])
  })

  test("errors are NGSI-LD ProblemDetails with the API's code", async () => {
    const cases: [string, number, string, string, string?][] = [
      ["/ngsi-ld/v1/entities", 400, "BadRequestData", "CM_ERR_BAD_QUERY"],
      ["/ngsi-ld/v1/entities?type=ACMeasurement&options=sysAttrs", 400, "BadRequestData", "CM_ERR_BAD_QUERY"],
      ["/ngsi-ld/v1/entities?type=ACMeasurement&limit=1001", 400, "BadRequestData", "CM_ERR_BAD_REQUEST"],
      ["/ngsi-ld/v1/entities?type=ACMeasurement&q=x", 400, "BadRequestData", "CM_ERR_UNKNOWN_KEY"],
      ["/ngsi-ld/v1/entities/not-a-uri", 400, "BadRequestData", "CM_ERR_BAD_REQUEST"],
      [`/ngsi-ld/v1/entities/urn:ngsi-ld:ACMeasurement:${uid("none")}`, 404, "ResourceNotFound", "CM_ERR_NOT_FOUND"],
      [`/ngsi-ld/v1/entities/urn:ngsi-ld:ACMeasurement:${wm}`, 404, "ResourceNotFound", "CM_ERR_NOT_FOUND"],
      [`/ngsi-ld/v1/entities/urn:ngsi-ld:Thing:${wm}`, 404, "ResourceNotFound", "CM_ERR_NOT_FOUND"],
      [`/ngsi-ld/v1/entities/${encodeURIComponent(W_ID)}`, 406, "InvalidRequest", "CM_ERR_NOT_ACCEPTABLE", "text/html"],
    ]
    for (const [url, status, type, code, accept] of cases) {
      const res = await get(url, accept)
      expect(res.statusCode, url).toBe(status)
      expect(res.json(), url).toMatchObject({ type: `https://uri.etsi.org/ngsi-ld/errors/${type}`, error: code })
      expect(typeof res.json().detail).toBe("string")
    }
    // an unknown type matches nothing (NGSI-LD), it is not an error
    expect((await get("/ngsi-ld/v1/entities?type=Streetlight")).json()).toEqual([])
  })
})
