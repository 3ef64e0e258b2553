// No reading lost, none stored twice (issue 3): the real firmware runs through broker, bridge, database and power faults in one run; at the end, what the firmware generated is compared with what the API returns.
import { afterAll, describe, expect, test } from "vitest"
import { BridgeProcess, MosquittoProcess, TcpProxy } from "./infra.js"
import { PG_URL, dropSchema, uid, waitFor } from "./helpers.js"
import {
  caughtUp,
  checkContinuity,
  compare,
  drivenMeter,
  generated,
  redelivered,
  sleep,
  type Row,
} from "./fault-util.js"

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
    })
    await bridge.start()
    cleanup.push(() => bridge.stop())

    const meterId = uid("fault")
    const { meter, initial, startDriving, stopDriving } = drivenMeter(meterId, broker.port)
    cleanup.push(async () => {
      stopDriving()
      await meter.stop()
    })
    await meter.start()
    await waitFor("first frame", async () => generated(meter).size >= 1, 30_000)
    startDriving()
    await waitFor("frames", async () => generated(meter).size >= 3, 30_000)
    await caughtUp(meter, bridge, meterId)

    // 1. the broker goes away while the meter keeps measuring
    await broker.stop()
    await sleep(6000)
    await broker.start()
    await caughtUp(meter, bridge, meterId)

    // 2. the bridge crashes mid-stream
    await sleep(1500)
    await bridge.kill()
    await sleep(4000)
    await bridge.start()
    await caughtUp(meter, bridge, meterId)

    // 3. the database is unreachable for a while
    proxy.cut()
    await sleep(6000)
    proxy.restore()
    await caughtUp(meter, bridge, meterId)

    // 4. power loss: the VM stops dead and boots again from its flash
    await meter.stop()
    await sleep(3000)
    await meter.start()
    await waitFor(
      "frames after reboot",
      async () => [...generated(meter).keys()].some((k) => k.startsWith("2/")),
      30_000,
    )
    await sleep(3000)
    await caughtUp(meter, bridge, meterId)

    const rows = (await bridge.get<{ readings: Row[] }>(`/meters/${meterId}/readings`)).readings
    const counts = compare(meter, rows)
    console.log(
      `fault run (mosquitto+postgres): generated ${counts.generated}, stored ${counts.stored}, duplicates ${counts.duplicates}, missing ${counts.missing}, backfilled ${rows.filter((r) => r.backfill).length}, redelivered since the last bridge restart ${await redelivered(bridge)}, ${Math.round((Date.now() - t0) / 1000)} s`,
    )
    expect(counts.missing).toBe(0)
    expect(counts.duplicates).toBe(0)
    expect(counts.stored).toBe(counts.generated)
    checkContinuity(rows, initial)
    expect(new Set(rows.map((r) => r.boot))).toEqual(new Set([1, 2]))
    expect(rows.some((r) => r.backfill)).toBe(true) // made during the outages, sent from the queue
  })
})
