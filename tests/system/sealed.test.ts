// Sealed frames end to end: the real firmware, provisioned with a key, over plain MQTT
// (the Pico W case) to a production bridge. A client with full rights on the broker sees every
// frame and can publish anything: it can neither read the values nor get a forged, bit-flipped
// or unsealed frame stored; its replays are duplicates. Downlinks are sealed: the meter refuses an
// unsealed config and a replayed one. A key rotation goes through with the meter's next birth.
import { randomBytes } from "node:crypto"
import mqtt from "mqtt"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { encodeDownlink } from "../../bridge/src/codec/downlink.js"
import { sealUplink } from "../../testkit/frames.js"
import { citymeter } from "../../bridge/src/gen/citymeter.js"
import { keyId } from "../../bridge/src/seal.js"
import { startService, type Service } from "../../bridge/src/service.js"
import { downTopic, upTopic, type UpKind } from "../../bridge/src/topics.js"
import { SimMeter } from "../../sim/src/meter.js"
import { generated, sleep } from "../fault-util.js"
import { MOSQUITTO_URL, PG_URL, captureLog, dropSchema, uid, waitFor } from "../helpers.js"

const { Uplink } = citymeter.v1
const WRITE = "write-token"
const PRESSURE_PA = 300_000
/** protobuf varint of the pressure the sensor reports: an open frame carries these bytes. */
const PRESSURE_VARINT = Buffer.from([0xe0, 0xa7, 0x12]).toString("hex")

describe("sealed frames with the real firmware over plain MQTT", () => {
  const schema = `t_${randomBytes(6).toString("hex")}`
  const meterId = uid("sealed")
  const key = randomBytes(32)
  const seen: { topic: string; payload: Buffer }[] = []
  let svc: Service
  let spy: mqtt.MqttClient
  let meter: SimMeter
  let water = 10_000

  beforeAll(async () => {
    svc = await startService({
      mqttUrl: MOSQUITTO_URL,
      databaseUrl: PG_URL,
      storeOptions: { schema },
      clientId: uid("sealed-bridge"),
      apiTokens: { write: WRITE },
      log: captureLog().log,
    })
    await svc.store.registerMeter(meterId, new Date(), { policy: "sealed", key })
    // full broker rights: sees every frame both ways, may publish anywhere
    spy = await mqtt.connectAsync(MOSQUITTO_URL, { clientId: uid("spy") })
    await spy.subscribeAsync(`citymeter/v1/${meterId}/#`, { qos: 1 })
    spy.on("message", (topic, payload) => seen.push({ topic, payload: Buffer.from(payload) }))
    meter = new SimMeter({
      meterId,
      water: "register", // exact volumes to compare with what the bridge opened
      settings: {
        MQTT_PORT: Number(new URL(MOSQUITTO_URL).port || 1883),
        INTERVAL_S: 1,
        BATCH: 2,
        SEAL_KEY: key.toString("hex"),
      },
    })
    meter.setWater({ volumeMl: water })
    meter.setElectricity({ energyWh: 100, powerW: 400, voltageDv: 2300 })
    meter.setPressure(PRESSURE_PA)
    await meter.start()
    const drive = setInterval(() => meter.setWater({ volumeMl: (water += 25) }), 100)
    afterAll(() => clearInterval(drive))
  })
  afterAll(async () => {
    await meter?.stop()
    await spy?.endAsync()
    await svc?.stop()
    await dropSchema(schema)
  })

  const stored = async () => svc.store.readings(meterId, { limit: 100_000 })
  const rejected = async (reason: string) =>
    (await svc.metrics.framesRejected.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0
  const received = async () => (await svc.metrics.framesIn.get()).values.reduce((a, v) => a + v.value, 0)
  const uplinks = (kind: UpKind) => seen.filter((m) => m.topic === upTopic(meterId, kind))

  test("the meter's frames are sealed on the wire, stored by the bridge, and unreadable to the broker", async () => {
    await waitFor("four frames stored", async () => new Set((await stored()).map((r) => r.seq)).size >= 4, 30_000)
    expect(meter.lines.some((l) => l.includes(`frames sealed (key id ${keyId(key)})`))).toBe(true)
    const frames = uplinks("readings")
    expect(frames.length).toBeGreaterThanOrEqual(4)
    for (const f of [...frames, ...uplinks("birth")]) {
      const u = Uplink.decode(f.payload)
      expect(u.body).toBe("sealed") // no readings or birth in the clear
      expect(f.payload.toString("hex")).not.toContain(PRESSURE_VARINT)
    }
    // what the bridge opened is what the sensors said
    const rows = await stored()
    expect(rows.every((r) => r.pressureAvgPa === PRESSURE_PA && r.voltageDv === 2300)).toBe(true)
    expect((await svc.store.getMeter(meterId))!.online).toBe(true)
  }, 60_000)

  test("a client with full broker rights gets no forged, flipped, unsealed or replayed frame stored", async () => {
    const captured = uplinks("readings").slice(0, 3)
    const before = await received()
    const pub = await mqtt.connectAsync(MOSQUITTO_URL, { clientId: uid("forger") })
    let forged = 0
    // every single-bit flip of three real frames
    for (const f of captured)
      for (let bit = 0; bit < f.payload.length * 8; bit++) {
        const b = Buffer.from(f.payload)
        b[bit >> 3] ^= 1 << (bit & 7)
        await pub.publishAsync(upTopic(meterId, "readings"), b, { qos: 0 })
        forged++
      }
    // a well-formed open frame with plausible values and a fresh seq; a frame sealed with another key
    const boot = Uplink.decode(captured[0].payload).boot
    const fake = {
      boot,
      seq: 50,
      readings: {
        startS: Math.floor(Date.now() / 1000) - 60,
        timeSynced: true,
        intervalS: 1,
        water: { volumeMl: [9_999] },
      },
    }
    await pub.publishAsync(upTopic(meterId, "readings"), Buffer.from(Uplink.encode(fake).finish()), { qos: 1 })
    await pub.publishAsync(upTopic(meterId, "readings"), Buffer.from(sealUplink(randomBytes(32), fake)), { qos: 1 })
    forged += 2
    // replays of real frames, byte for byte
    for (const f of captured) await pub.publishAsync(upTopic(meterId, "readings"), f.payload, { qos: 1 })
    await pub.endAsync()
    await waitFor("every forgery handled", async () => (await received()) >= before + forged + captured.length, 60_000)
    await sleep(1000)

    // nothing but the meter's own frames is stored, each once
    const gen = generated(meter)
    const rows = await stored()
    const keys = rows.map((r) => `${r.boot}/${r.seq}/${r.idx}`)
    expect(new Set(keys).size).toBe(keys.length)
    for (const r of rows) expect(gen.has(`${r.boot}/${r.seq}`), `${r.boot}/${r.seq}`).toBe(true)
    expect(rows.some((r) => r.volumeMl === 9_999)).toBe(false)
    const seal = await rejected("CM_ERR_SEAL")
    const unsealed = await rejected("CM_ERR_UNSEALED")
    const structural = (await rejected("CM_ERR_DECODE")) + (await rejected("CM_ERR_NONCANONICAL"))
    console.log(
      `forgery run: ${forged} forged frames, 0 stored (CM_ERR_SEAL ${seal}, CM_ERR_UNSEALED ${unsealed}, ` +
        `undecodable ${structural}); ${captured.length} replays acked as duplicates`,
    )
    expect(seal + unsealed + structural).toBeGreaterThanOrEqual(forged - captured.length * 8) // flips of clear ids may hit other reasons
    expect(unsealed).toBeGreaterThanOrEqual(1)
    expect((await svc.metrics.framesDuplicate.get()).values[0]?.value ?? 0).toBeGreaterThanOrEqual(captured.length)
  }, 120_000)

  test("sealed config downlinks are applied; an unsealed one and a replayed one are refused", async () => {
    const intervals = async () => new Set((await stored()).slice(-4).map((r) => r.intervalS))
    const config = async (intervalS: number) => {
      const res = await svc.app.inject({
        method: "POST",
        url: `/meters/${meterId}/config`,
        headers: { authorization: `Bearer ${WRITE}` },
        payload: { intervalS },
      })
      expect(res.statusCode).toBe(202)
      await waitFor(
        `${intervalS} s intervals`,
        async () => {
          const s = await intervals()
          return s.size === 1 && s.has(intervalS)
        },
        40_000,
      )
      return seen.filter((m) => m.topic === downTopic(meterId, "config")).at(-1)!.payload
    }
    const sealedTwo = await config(2)
    expect(citymeter.v1.Downlink.decode(sealedTwo).body).toBe("sealed")
    await config(1)
    // an unsealed config (the broker could send one), then the sealed 2 s config again (a replay)
    await spy.publishAsync(downTopic(meterId, "config"), Buffer.from(encodeDownlink({ config: { intervalS: 3 } })), {
      qos: 1,
    })
    await spy.publishAsync(downTopic(meterId, "config"), sealedTwo, { qos: 1 })
    await waitFor(
      "the meter logs the refusals",
      async () => meter.lines.some((l) => /downlinks refused \(unsealed, forged or replayed\): 2/.test(l)),
      30_000,
    )
    await sleep(4000)
    expect(await intervals()).toEqual(new Set([1]))
  }, 120_000)

  test("a key rotation reaches the meter in a sealed config and is confirmed by its next birth", async () => {
    const res = await svc.app.inject({
      method: "POST",
      url: `/meters/${meterId}/rotate-key`,
      headers: { authorization: `Bearer ${WRITE}` },
    })
    expect(res.statusCode).toBe(202)
    const { nextKeyId } = res.json()
    expect(JSON.stringify(res.json())).not.toMatch(/[0-9a-f]{64}/) // the key itself is never answered
    await waitFor(
      "the meter switched",
      async () => meter.lines.some((l) => l.includes(`key rotated (key id ${nextKeyId})`)),
      30_000,
    )
    await waitFor(
      "the bridge confirmed",
      async () => (await svc.store.getMeter(meterId))!.seal.nextKey === null,
      30_000,
    )
    const m = (await svc.store.getMeter(meterId))!
    expect(keyId(m.seal.key!)).toBe(nextKeyId)
    // frames sealed under the new key are stored
    const seqs = async () => Math.max(...(await stored()).map((r) => r.seq))
    const last = await seqs()
    await waitFor("frames after the rotation", async () => (await seqs()) >= last + 2, 30_000)
  }, 90_000)
})
