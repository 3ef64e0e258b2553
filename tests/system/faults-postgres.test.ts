// No reading lost, none stored twice: the real firmware runs through broker, bridge, database and power faults
// in one run; at the end, what the firmware generated is compared with what the API returns.
import { afterAll, describe, expect, test } from "vitest"
import { BridgeProcess, MosquittoProcess, TcpProxy } from "../../testkit/infra.js"
import { PG_URL, dropSchema, uid } from "../helpers.js"
import { caughtUp, drivenMeter, finalCheck, powerLoss, sleep, startDriven } from "../fault-util.js"

describe("fault injection on Mosquitto + PostgreSQL", () => {
  const cleanup: (() => Promise<void>)[] = []
  afterAll(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {})
  })

  test("broker restart, bridge SIGKILL, database outage and power loss lose nothing and store nothing twice", async () => {
    const t0 = Date.now()
    const broker = await MosquittoProcess.create()
    cleanup.push(() => broker.stop())
    const pgPort = Number(new URL(PG_URL).port || 5432)
    const proxy = await TcpProxy.create(pgPort)
    cleanup.push(() => proxy.close())
    const schema = `t_${uid("f").slice(2).replace(/-/g, "_")}`
    cleanup.push(() => dropSchema(schema))
    const pgViaProxy = new URL(PG_URL)
    pgViaProxy.port = String(proxy.port)
    const bridge = new BridgeProcess({
      MQTT_URL: broker.url,
      DATABASE_URL: pgViaProxy.toString(),
      DATABASE_SCHEMA: schema,
      MQTT_CLIENT_ID: uid("fault-bridge"),
      CITYMETER_MODE: "demo", // meters register with their first frame
    })
    await bridge.start()
    cleanup.push(() => bridge.stop())

    const meterId = uid("fault")
    const d = drivenMeter(meterId, broker.port)
    cleanup.push(async () => {
      d.stopDriving()
      await d.meter.stop()
    })
    await startDriven(d, bridge, meterId)

    // 1. the broker goes away while the meter keeps measuring
    await broker.stop()
    await sleep(6000)
    await broker.start()
    await caughtUp(d.meter, bridge, meterId)

    // 2. the bridge crashes mid-stream
    await sleep(1500)
    await bridge.kill()
    await sleep(4000)
    await bridge.start()
    await caughtUp(d.meter, bridge, meterId)

    // 3. the database is unreachable for a while
    proxy.cut()
    await sleep(6000)
    proxy.restore()
    await caughtUp(d.meter, bridge, meterId)

    // 4. power loss: the VM stops dead and boots again from its flash
    await powerLoss(d.meter, bridge, meterId)
    const rows = await finalCheck("mosquitto+postgres", t0, d, bridge, meterId)
    // two boots: the first at a random start (proto Uplink.boot), then the next
    const boots = [...new Set(rows.map((r) => r.boot))].sort((a, b) => a - b)
    expect(boots).toEqual([boots[0], boots[0] + 1])
    expect(rows.some((r) => r.backfill)).toBe(true) // made during the outages, sent from the queue
  })
})
