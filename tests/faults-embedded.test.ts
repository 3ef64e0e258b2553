// No reading lost, none stored twice (issue 3): the real firmware runs through bridge-process and power faults on the embedded defaults in one run; at the end, what the firmware generated is compared with what the API returns.
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, test } from "vitest"
import { BridgeProcess, freePort } from "./infra.js"
import { uid, waitFor } from "./helpers.js"
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

describe("fault injection on the embedded broker + PGlite", () => {
  const cleanup: (() => Promise<void>)[] = []
  afterAll(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {})
  })

  test("bridge process SIGKILL (broker and database with it) and power loss lose nothing", async () => {
    const t0 = Date.now()
    const port = await freePort()
    const dataDir = mkdtempSync(join(tmpdir(), "cm-pglite-"))
    const bridge = new BridgeProcess({
      EMBEDDED_MQTT_PORT: String(port),
      DATABASE_URL: `pglite:${dataDir}`,
      LOG_LEVEL: "debug",
    })
    await bridge.start()
    cleanup.push(() => bridge.stop())
    const meterId = uid("efault")
    const { meter, initial, startDriving, stopDriving } = drivenMeter(meterId, port)
    cleanup.push(async () => {
      stopDriving()
      await meter.stop()
    })
    await meter.start()
    await waitFor("first frame", async () => generated(meter).size >= 1, 30_000)
    startDriving()
    await waitFor("frames", async () => generated(meter).size >= 3, 30_000)
    await caughtUp(meter, bridge, meterId)

    await sleep(1500)
    await bridge.kill()
    await sleep(5000)
    await bridge.start()
    await caughtUp(meter, bridge, meterId)

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
      `fault run (embedded): generated ${counts.generated}, stored ${counts.stored}, duplicates ${counts.duplicates}, missing ${counts.missing}, redelivered since the last bridge restart ${await redelivered(bridge)}, ${Math.round((Date.now() - t0) / 1000)} s`,
    )
    expect(counts.missing).toBe(0)
    expect(counts.duplicates).toBe(0)
    expect(counts.stored).toBe(counts.generated)
    checkContinuity(rows, initial)
  })
})
