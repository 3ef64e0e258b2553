// The bridge's caps (issue 21, item 3): rejected frames logged per reason and interval rather than
// one line each; retained messages the embedded broker keeps (size, topic tree).
import mqtt from "mqtt"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { startEmbeddedBroker } from "../bridge/src/broker.js"
import { Ingest } from "../bridge/src/ingest.js"
import { createMetrics } from "../bridge/src/metrics.js"
import { openPglite } from "../bridge/src/store/engines.js"
import type { Store } from "../bridge/src/store/store.js"
import { upTopic } from "../bridge/src/topics.js"
import { captureLog, uid, waitFor } from "./helpers.js"

describe("rejected frames under a flood", () => {
  let store: Store
  beforeAll(async () => {
    store = await openPglite(undefined)
  })
  afterAll(async () => {
    await store?.close()
  })

  test("log lines are bounded per reason and interval; the metric counts every frame", async () => {
    const { log, lines } = captureLog()
    const metrics = createMetrics()
    const ingest = new Ingest(store, async () => {}, metrics, log, { autoRegister: true, rejectLogIntervalMs: 300 })
    const FRAMES = 2000
    const garbage = Buffer.from("ffffffffffffffffffff", "hex")
    const flood = async (n: number) => {
      const done: Promise<unknown>[] = []
      for (let i = 0; i < n; i++) {
        done.push(ingest.handle(upTopic(uid("junk"), "readings"), garbage))
        done.push(ingest.handle(`citymeter/v1/${uid("junk")}/up/bogus`, garbage))
      }
      await Promise.all(done)
    }
    await flood(FRAMES / 2)
    const rejected = lines.filter((l) => typeof l.msg === "string" && l.msg.startsWith("frame rejected"))
    // one sample per reason, with its details
    expect(rejected.map((l) => l.reason).sort()).toEqual(["CM_ERR_DECODE", "CM_ERR_TOPIC"])
    expect(rejected.every((l) => typeof l.detail === "string" && typeof l.topic === "string")).toBe(true)
    // the interval ends: one count per reason
    await new Promise((r) => setTimeout(r, 500))
    const counts = lines.filter((l) => typeof l.count === "number")
    expect(counts.map((l) => [l.reason, l.count]).sort()).toEqual([
      ["CM_ERR_DECODE", FRAMES / 2],
      ["CM_ERR_TOPIC", FRAMES / 2],
    ])
    // the next interval starts with a sample again
    await flood(1)
    ingest.stop()
    expect(lines.filter((l) => String(l.msg).startsWith("frame rejected")).length).toBe(6)
    const metric = await metrics.framesRejected.get()
    expect(metric.values.reduce((n, v) => n + v.value, 0)).toBe(FRAMES + 2)
  })
})

describe("retained messages on the embedded broker", () => {
  test("kept only under citymeter/v1/ and up to the size limit; the others reach live subscribers, counted and logged", async () => {
    const metrics = createMetrics()
    const { log, lines } = captureLog()
    const broker = await startEmbeddedBroker(0, "127.0.0.1", { maxRetainedBytes: 1024, metrics, log })
    const clients: mqtt.MqttClient[] = []
    const connect = async () => {
      const c = await mqtt.connectAsync(broker.url, { clientId: uid("ret") })
      clients.push(c)
      return c
    }
    try {
      const live = await connect()
      const seenLive: string[] = []
      live.on("message", (topic) => seenLive.push(topic))
      await live.subscribeAsync("#", { qos: 1 })
      const pub = await connect()
      const small = Buffer.alloc(1000, 1)
      const big = Buffer.alloc(50 * 1024, 2)
      await pub.publishAsync("citymeter/v1/m-1/status", small, { qos: 1, retain: true })
      await pub.publishAsync("citymeter/v1/m-2/status", big, { qos: 1, retain: true })
      for (let i = 0; i < 5; i++) await pub.publishAsync(`junk/${i}`, small, { qos: 1, retain: true })
      await waitFor("live delivery", async () => seenLive.length === 7)

      const late = await connect()
      const kept: string[] = []
      late.on("message", (topic, _payload, packet) => packet.retain && kept.push(topic))
      await late.subscribeAsync("#", { qos: 1 })
      await new Promise((r) => setTimeout(r, 300))
      expect(kept).toEqual(["citymeter/v1/m-1/status"])

      const refused = await metrics.brokerRetainedRefused.get()
      expect(Object.fromEntries(refused.values.map((v) => [v.labels.reason, v.value]))).toEqual({
        too_large: 1,
        outside_tree: 5,
      })
      const logged = lines.filter((l) => l.msg === "retained message not kept")
      expect(logged.map((l) => l.reason).sort()).toEqual(["outside_tree", "too_large"])
      expect(logged.find((l) => l.reason === "too_large")).toMatchObject({ bytes: big.length, max: 1024 })
    } finally {
      await Promise.all(clients.map((c) => c.endAsync()))
      await broker.close()
    }
  })
})
