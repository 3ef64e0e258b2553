// The Config downlink route (POST /meters/:id/config) refuses, against a stored meter's board, what
// the meter could not count or keep (proto/tunables.json), saying why; within the limits the Config
// reaches the meter. The schema's own checks are unit-tested in tests/unit/tunables.test.ts.
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { buildApp } from "../../bridge/src/api.js"
import { citymeter } from "../../bridge/src/gen/citymeter.js"
import { createMetrics } from "../../bridge/src/metrics.js"
import { openPglite } from "../../bridge/src/store/engines.js"
import type { Store } from "../../bridge/src/store/store.js"
import { TUNABLE_BY_NAME } from "../../bridge/src/tunables/schema.js"
import { recordBirth } from "../../testkit/store-writes.js"

describe("the Config downlink route refuses what the meter would refuse", () => {
  let store: Store
  const sent: { meterId: string; payload: Uint8Array }[] = []
  let app: ReturnType<typeof buildApp>
  const auth = { authorization: "Bearer tun-token" }
  const post = (meterId: string, payload: object) =>
    app.inject({ method: "POST", url: `/meters/${meterId}/config`, payload, headers: auth })

  beforeAll(async () => {
    store = await openPglite(undefined)
    await store.registerMeter("tun-pico", new Date())
    await recordBirth(
      store,
      "tun-pico",
      { firmware: "fw", board: "citymeter_picow", boot: 1, seq: 0, intervalS: 900, batch: 4, uptimeEpochMs: 0 },
      new Date(),
    )
    app = buildApp({
      store,
      metrics: createMetrics(),
      apiToken: "tun-token",
      downlink: async (meterId, _kind, payload) => {
        sent.push({ meterId, payload })
      },
    })
    await app.ready()
  }, 180_000) // PGlite's start took over 60 s with the CLI suite running beside it on 2 cores
  afterAll(async () => {
    await app?.close()
    await store?.close()
  })

  test("pulses past the board's limit: 422 with the reason; nothing is sent", async () => {
    const res = await post("tun-pico", { pulsesPerL: 20 })
    expect(res.statusCode).toBe(422)
    expect(res.json().error).toBe("CM_ERR_CONFIG_REFUSED")
    expect(res.json().message).toMatch(
      /PULSES_PER_L=20 at MAX_FLOW_LMIN=50 is 16\.7 pulses\/s.*checked with the defaults of/,
    )
    // pulses shorter than the board counts (20 ms)
    const short = await post("tun-pico", { pulseMs: 19 })
    expect(short.statusCode).toBe(422)
    expect(short.json().message).toMatch(/PULSE_MS=19/)
    expect(sent).toHaveLength(0)
  })

  test("a BATCH past the flash slot is a 400; within the limits the Config reaches the meter", async () => {
    const big = await post("tun-pico", { batch: TUNABLE_BY_NAME.batch.max + 1 })
    expect(big.statusCode).toBe(400)
    expect(big.json().message).toMatch(/batch must be <= 4/)
    const ok = await post("tun-pico", { pulsesPerL: 10, maxFlowLmin: 30, batch: 2 })
    expect(ok.statusCode, ok.body).toBe(202)
    expect(sent).toHaveLength(1)
    const d = citymeter.v1.Downlink.decode(sent[0].payload)
    expect(d.config).toMatchObject({ pulsesPerL: 10, maxFlowLmin: 30, batch: 2 })
  })
})
