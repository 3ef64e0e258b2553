// The bridge's caps (issue 21, item 3): rejected frames logged per reason and interval rather than
// one line each.
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { Ingest } from "../bridge/src/ingest.js"
import { createMetrics } from "../bridge/src/metrics.js"
import { openPglite } from "../bridge/src/store/engines.js"
import type { Store } from "../bridge/src/store/store.js"
import { upTopic } from "../bridge/src/topics.js"
import { captureLog, uid } from "./helpers.js"

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
