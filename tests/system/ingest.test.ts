// Bad input gets a clear error and loses nothing: every rejected frame is counted by reason,
// logged with its meter, kept as a dead letter, and valid frames keep flowing.
import { createHash } from "node:crypto"
import mqtt from "mqtt"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { upTopic } from "../../bridge/src/topics.js"
import { startService } from "../../bridge/src/service.js"
import { MOSQUITTO_URL, STACKS, captureLog, startStack, uid, waitFor, type TestStack } from "../helpers.js"
import { readingsFrame as readingsOf, uplink } from "../../testkit/frames.js"

function readingsFrame(seq: number, startS: number) {
  return readingsOf({ seq, startS, totalMl: 5000 + seq, volumeMl: [seq] })
}

describe.each(STACKS)("malformed uplinks on %s", (kind) => {
  let stack: TestStack
  let pub: mqtt.MqttClient
  beforeAll(async () => {
    stack = await startStack(kind)
    pub = await mqtt.connectAsync(stack.mqttUrl, { clientId: uid("pub") })
  })
  afterAll(async () => {
    await pub?.endAsync()
    await stack?.stop()
  })

  const rejected = async (reason: string) =>
    (await stack.metrics.framesRejected.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0

  test("each bad frame is counted, logged with its reason, dead-lettered; the bridge keeps ingesting and serving", async () => {
    const meterId = uid("bad")
    const nowS = Math.floor(Date.now() / 1000)
    const cases: [string, string, Buffer][] = [
      ["CM_ERR_DECODE", upTopic(meterId, "readings"), Buffer.from("ffffffffffffffffffff", "hex")],
      ["CM_ERR_OVERSIZE", upTopic(meterId, "readings"), Buffer.alloc(5000, 1)],
      ["CM_ERR_KIND_MISMATCH", upTopic(meterId, "alarm"), readingsFrame(9, nowS)],
      ["CM_ERR_TOPIC", `citymeter/v1/${meterId}/up/bogus`, readingsFrame(9, nowS)],
      ["CM_ERR_CLOCK_SKEW", upTopic(meterId, "readings"), readingsFrame(8, nowS + 86400)],
      [
        "CM_ERR_SERIES",
        upTopic(meterId, "readings"),
        uplink({
          boot: 1,
          seq: 7,
          readings: { intervalS: 60, water: { volumeMl: [1, 2] }, pressure: { avgPa: [1] } },
        }),
      ],
    ]
    for (const [, topic, payload] of cases) await pub.publishAsync(topic, payload, { qos: 1 })
    // a valid frame after the bad ones, and the same frame again (redelivery)
    await pub.publishAsync(upTopic(meterId, "readings"), readingsFrame(1, nowS - 120), { qos: 1 })
    await pub.publishAsync(upTopic(meterId, "readings"), readingsFrame(1, nowS - 120), { qos: 1 })
    await pub.publishAsync(upTopic(meterId, "readings"), readingsFrame(2, nowS - 60), { qos: 1 })

    await waitFor("valid frames stored", async () => {
      const res = await stack.app.inject({ url: `/meters/${meterId}/readings` })
      return res.statusCode === 200 && res.json().readings.length === 2
    })
    for (const [reason] of cases) expect(await rejected(reason), reason).toBe(1)
    const dup = await stack.metrics.framesDuplicate.get()
    expect(dup.values[0].value).toBe(1)

    const logged = stack.lines.filter((l) => l.msg === "frame rejected")
    for (const [reason] of cases)
      expect(logged.some((l) => l.reason === reason && typeof l.detail === "string")).toBe(true)
    expect(logged.filter((l) => l.meterId === meterId)).toHaveLength(cases.length - 1) // the bad topic has no meter

    const dead = await stack.store.deadLetters({ limit: 50 })
    for (const [reason, topic] of cases) expect(dead.some((d) => d.reason === reason && d.topic === topic)).toBe(true)

    const rows = (await stack.app.inject({ url: `/meters/${meterId}/readings` })).json().readings
    expect(rows.map((r: { volumeMl: number; waterTotalMl: number }) => [r.volumeMl, r.waterTotalMl])).toEqual([
      [1, 5001],
      [2, 5002],
    ])
    expect((await stack.app.inject({ url: "/healthz" })).statusCode).toBe(200)
    expect((await stack.app.inject({ url: "/meters/not%20valid/readings" })).statusCode).toBe(400)
    expect((await stack.app.inject({ url: `/meters/${meterId}/readings?from=yesterday` })).json().error).toBe(
      "CM_ERR_BAD_TIME",
    )
  })

  /** Publishes and waits until the bridge has settled one more frame (stored, duplicate or dead-lettered, committed). */
  const total = async (c: { get(): Promise<{ values: { value: number }[] }> }) =>
    (await c.get()).values.reduce((a, v) => a + v.value, 0)
  const settled = async () =>
    (await total(stack.metrics.framesStored)) +
    (await total(stack.metrics.framesRejected)) +
    (await total(stack.metrics.framesDuplicate))
  const publish = async (topic: string, payload: Buffer) => {
    const before = await settled()
    await pub.publishAsync(topic, payload, { qos: 1 })
    await waitFor(`${topic} settled`, async () => (await settled()) > before)
  }

  test("same (boot, seq) with other content is a conflict: acked, dead-lettered with both hashes, alarmed, never dropped unseen", async () => {
    const meterId = uid("conflict")
    const nowS = Math.floor(Date.now() / 1000)
    const acks: string[] = []
    const meter = await mqtt.connectAsync(stack.mqttUrl, { clientId: uid("meter") })
    await meter.subscribeAsync(`citymeter/v1/${meterId}/down/ack`, { qos: 1 })
    meter.on("message", (_t, p) => acks.push(p.toString("hex")))
    const acksSent = async () =>
      (await stack.metrics.downlinks.get()).values.find((v) => v.labels.kind === "ack" && v.labels.outcome === "sent")
        ?.value ?? 0
    const sentBefore = await acksSent()
    const first = readingsFrame(3, nowS - 120)
    const forged = readingsOf({ seq: 3, startS: nowS - 120, totalMl: 999_999, volumeMl: [999] })
    await publish(upTopic(meterId, "readings"), first)
    await publish(upTopic(meterId, "readings"), first) // a redelivery: a duplicate
    await publish(upTopic(meterId, "readings"), forged)
    // at least three: other suites' bridges on the shared Mosquitto subscribe to every meter and
    // (auto-registering) ack these frames too; ours are shown by its own counters below
    await waitFor("three acks", async () => acks.length >= 3)
    expect(new Set(acks).size).toBe(1) // every one acks (boot 1, seq 3)
    await waitFor("our bridge sent three acks", async () => (await acksSent()) - sentBefore === 3)

    const rows = (await stack.app.inject({ url: `/meters/${meterId}/readings` })).json().readings
    expect(rows.map((r: { volumeMl: number }) => r.volumeMl)).toEqual([3]) // the first stays
    const [letter] = (await stack.store.deadLetters({ limit: 20 })).filter((d) => d.meterId === meterId)
    const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex")
    expect(letter).toMatchObject({ reason: "CM_ERR_CONFLICT", payloadSha256: sha(forged), storedSha256: sha(first) })
    expect(Buffer.from(letter.payloadHead)).toEqual(forged) // kept whole: it can be replayed
    expect(await rejected("CM_ERR_CONFLICT")).toBeGreaterThanOrEqual(1)
    expect(stack.lines.some((l) => l.reason === "CM_ERR_CONFLICT" && l.level === 40 && l.meterId === meterId)).toBe(
      true,
    )
    const open = await stack.store.alarms({ meterId, open: true })
    expect(open.map((a) => [a.type, a.source])).toEqual([["FRAME_CONFLICT", "bridge"]])
    await meter.endAsync()
  })

  test("a death from an earlier boot, or an empty one, leaves a re-born meter online", async () => {
    const meterId = uid("live")
    const birth = (boot: number) =>
      uplink({
        boot,
        seq: 0,
        birth: { firmware: "fw", board: "b", intervalS: 60, batch: 1, uptimeS: 1 },
      })
    const death = (boot: number) => uplink({ boot, death: {} })
    const online = async () => (await stack.store.getMeter(meterId))?.online
    await publish(upTopic(meterId, "birth"), birth(4))
    await publish(upTopic(meterId, "birth"), birth(5))
    expect(await online()).toBe(true)
    await publish(upTopic(meterId, "death"), death(4)) // boot 4's will, delivered late
    expect(await online()).toBe(true)
    await publish(upTopic(meterId, "death"), Buffer.alloc(0))
    expect(await online()).toBe(true)
    const reasons = (await stack.store.deadLetters({ limit: 20 }))
      .filter((d) => d.meterId === meterId)
      .map((d) => d.reason)
    expect(reasons).toEqual(["CM_ERR_STALE_DEATH", "CM_ERR_STALE_DEATH"])
    // the gauge is counted when scraped: the death shows at once, not at the next inactivity check
    const gauge = async () => (await stack.metrics.onlineMeters.get()).values[0]?.value ?? NaN
    const before = await gauge()
    await publish(upTopic(meterId, "death"), death(5))
    expect(await online()).toBe(false)
    expect(await gauge()).toBeLessThanOrEqual(before - 1) // (an inactivity check may take others too)
  })

  test("frames with a boot ahead of the last birth, or a seq beyond reach, are refused and not acked", async () => {
    const meterId = uid("window")
    const nowS = Math.floor(Date.now() / 1000)
    const frame = (boot: number, seq: number) =>
      uplink({
        boot,
        seq,
        readings: { startS: nowS - 60, timeSynced: true, intervalS: 60, water: { volumeMl: [7] } },
      })
    await publish(
      upTopic(meterId, "birth"),
      uplink({
        boot: 2,
        seq: 10,
        birth: { firmware: "fw", board: "b", intervalS: 60, batch: 1, uptimeS: 1 },
      }),
    )
    await publish(upTopic(meterId, "readings"), frame(652613, 11)) // a flipped boot
    await publish(upTopic(meterId, "readings"), frame(2, 2054061008)) // a flipped seq
    await publish(upTopic(meterId, "readings"), frame(2, 11)) // the real next frame
    const rows = (await stack.app.inject({ url: `/meters/${meterId}/readings` })).json().readings
    expect(rows.map((r: { boot: number; seq: number }) => [r.boot, r.seq])).toEqual([[2, 11]])
    const reasons = (await stack.store.deadLetters({ limit: 20 }))
      .filter((d) => d.meterId === meterId)
      .map((d) => d.reason)
    expect(reasons.sort()).toEqual(["CM_ERR_BOOT", "CM_ERR_SEQ"])
  })
})

describe("the registry outside the demo", () => {
  test("frames of meters that were not provisioned are refused; provisioned ones are stored", async () => {
    const { log, lines } = captureLog()
    const svc = await startService({
      databaseUrl: "pglite:memory",
      mqttUrl: MOSQUITTO_URL,
      clientId: uid("prod-bridge"),
      log,
    })
    const pub = await mqtt.connectAsync(MOSQUITTO_URL, { clientId: uid("pub") })
    try {
      const known = uid("known")
      const stranger = uid("stranger")
      await svc.store.registerMeter(known, new Date())
      const nowS = Math.floor(Date.now() / 1000)
      await pub.publishAsync(upTopic(stranger, "readings"), readingsFrame(1, nowS - 60), { qos: 1 })
      await pub.publishAsync(upTopic(known, "readings"), readingsFrame(1, nowS - 60), { qos: 1 })
      await waitFor("the known meter's frame", async () => (await svc.store.readings(known)).length === 1)
      // refusals are logged one sample per reason and interval, and other suites' meters on the
      // shared Mosquitto are strangers here too (seen: their refusal took the sample), so the
      // stranger's own refusal is read from the dead letters; the log has the reason
      await waitFor("the stranger's frame refused", async () =>
        (await svc.store.deadLetters({ limit: 1000 })).some(
          (d) => d.meterId === stranger && d.reason === "CM_ERR_UNKNOWN_METER",
        ),
      )
      expect(lines.some((l) => l.reason === "CM_ERR_UNKNOWN_METER")).toBe(true)
      expect(await svc.store.getMeter(stranger)).toBeUndefined() // no phantom meter
      expect(await svc.store.readings(stranger)).toEqual([])
    } finally {
      await pub.endAsync()
      await svc.stop()
    }
  })

  test("the embedded broker refuses to start anonymous outside the demo, and says what to set", async () => {
    await expect(startService({ databaseUrl: "pglite:memory", embeddedMqttPort: 0 })).rejects.toThrow(
      /anonymous clients only in the demo.*EMBEDDED_MQTT_PASSWORD_FILE/,
    )
  })
})
