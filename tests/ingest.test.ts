// Bad input gets a clear error and loses nothing: every rejected frame is counted by reason,
// logged with its meter, kept as a dead letter, and valid frames keep flowing.
import mqtt from "mqtt"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { citymeter } from "../bridge/src/gen/citymeter.js"
import { upTopic } from "../bridge/src/topics.js"
import { STACKS, startStack, uid, waitFor, type TestStack } from "./helpers.js"

const { Uplink } = citymeter.v1

function readingsFrame(seq: number, startS: number) {
  return Buffer.from(
    Uplink.encode(
      Uplink.fromObject({
        boot: 1,
        seq,
        readings: { startS, timeSynced: true, intervalS: 60, water: { totalMl: 5000 + seq, volumeMl: [seq] } },
      }),
    ).finish(),
  )
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
        Buffer.from(
          Uplink.encode(
            Uplink.fromObject({
              boot: 1,
              seq: 7,
              readings: { intervalS: 60, water: { volumeMl: [1, 2] }, pressure: { avgPa: [1] } },
            }),
          ).finish(),
        ),
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

    const dead = (await stack.app.inject({ url: "/dead-letters?limit=50" })).json().deadLetters as {
      reason: string
      topic: string
    }[]
    for (const [reason, topic] of cases) expect(dead.some((d) => d.reason === reason && d.topic === topic)).toBe(true)

    const rows = (await stack.app.inject({ url: `/meters/${meterId}/readings` })).json().readings
    expect(rows.map((r: { volumeMl: number; waterTotalMl: number }) => [r.volumeMl, r.waterTotalMl])).toEqual([
      [1, 5001],
      [2, 5002],
    ])
    expect((await stack.app.inject({ url: "/healthz" })).statusCode).toBe(200)
    expect((await stack.app.inject({ url: "/meters/not%20valid/readings" })).statusCode).toBe(400)
    expect((await stack.app.inject({ url: `/meters/${meterId}/readings?from=yesterday` })).json().error).toBe(
      "CM_ERR_BAD_QUERY",
    )
  })
})
