// The fleet generator (sim/src/fleet.ts): its frames are the contract's frames, a 2000-meter fleet
// is stored exactly once, and a reconnect storm of meters with their own connections recovers.
import { readFileSync, readdirSync } from "node:fs"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { decodeUplink } from "../../bridge/src/codec.js"
import { startService, type Service } from "../../bridge/src/service.js"
import { encodeUplink, Fleet, readingsUplink } from "../../sim/src/fleet.js"
import { captureLog, dropSchema, PG_URL, uid, waitFor } from "../helpers.js"
import { goldenDir } from "../../testkit/golden.js"
import { MosquittoProcess } from "../../testkit/infra.js"

describe("fleet frames", () => {
  test("the fleet's encoder writes every golden uplink byte for byte", () => {
    const uplinks = readdirSync(goldenDir)
      .filter((f) => f.endsWith(".json"))
      .map((f) => ({ f, g: JSON.parse(readFileSync(join(goldenDir, f), "utf8")) }))
      .filter(({ g }) => g.message === "Uplink")
    expect(uplinks.length).toBeGreaterThan(4)
    for (const { f, g } of uplinks)
      expect(encodeUplink(g.json).toString("hex"), f).toBe(
        readFileSync(join(goldenDir, f.replace(".json", ".hex")), "utf8").trim(),
      )
  })
  test("a fleet readings frame passes the bridge's validation with consistent totals", () => {
    const m = { meterId: "x", boot: 1, seq: 0, waterTotalMl: 500, energyTotalWh: 5 }
    const f = decodeUplink("readings", encodeUplink(readingsUplink(m, 1_700_000_000, 900, 4)), 1_700_010_000)
    if (f.kind !== "readings") throw new Error(f.kind)
    expect(f.intervals).toHaveLength(4)
    expect(f.waterTotalMl).toBe(500 + f.intervals.reduce((a, v) => a + (v.volumeMl ?? 0), 0))
  })
})

describe("fleet against Mosquitto + PostgreSQL", () => {
  let broker: MosquittoProcess
  let svc: Service
  const schema = `t_${uid("fl").slice(3).replace(/-/g, "_")}`
  const fleets: Fleet[] = []
  beforeAll(async () => {
    broker = await MosquittoProcess.create()
    // two ingest pipelines in one process, sharing the uplink (MQTT 5 shared subscription)
    svc = await startService({
      demo: true,
      mqttUrl: broker.url,
      databaseUrl: PG_URL,
      storeOptions: { schema },
      clientId: uid("bridge"),
      consumers: 2,
      log: captureLog().log,
    })
  })
  afterAll(async () => {
    for (const f of fleets) await f.close()
    await svc?.stop()
    await broker?.stop()
    await dropSchema(schema)
  })
  const stored = async () =>
    (await svc.metrics.framesStored.get()).values.find((v) => v.labels.kind === "readings")?.value ?? 0

  test("2000 pooled meters, two rounds: every frame stored exactly once", async () => {
    const fleet = new Fleet({ mqttUrl: broker.url, meters: 2000, prefix: uid("pool"), mode: "pooled", pool: 4 })
    fleets.push(fleet)
    await fleet.connect()
    const before = await stored()
    const t0 = performance.now()
    await fleet.sendRound()
    await fleet.sendRound()
    await waitFor("4000 frames stored", async () => (await stored()) - before >= 4000, 60_000, 200)
    console.log(`fleet: 4000 frames from 2000 meters stored in ${Math.round(performance.now() - t0)} ms`)
    expect((await stored()) - before).toBe(4000)
    const rows = await svc.store.readings(fleet.meters[1234].meterId)
    expect(rows).toHaveLength(8)
    expect(rows[7].waterTotalMl).toBe(fleet.meters[1234].waterTotalMl)
  })

  test("a reconnect storm of 300 meters with their own connections: all back online on a new boot", async () => {
    const fleet = new Fleet({ mqttUrl: broker.url, meters: 300, prefix: uid("storm"), mode: "perMeter" })
    fleets.push(fleet)
    await fleet.connect()
    const online = async (boot: number) => {
      const ms = await Promise.all(fleet.meters.map((m) => svc.store.getMeter(m.meterId)))
      return ms.every((m) => m?.online && m.boot === boot)
    }
    await waitFor("300 meters online", () => online(1), 30_000, 250)
    const ms = await fleet.reconnectStorm()
    await waitFor("300 meters online after the storm", () => online(2), 60_000, 250)
    console.log(`fleet: reconnect storm of 300 meters reconnected in ${Math.round(ms)} ms`)
    await fleet.sendRound()
    const m = fleet.meters[42]
    await waitFor("frames after the storm", async () => (await svc.store.readings(m.meterId)).some((r) => r.boot === 2))
  })
})
