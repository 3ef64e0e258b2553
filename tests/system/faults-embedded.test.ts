// No reading lost, none stored twice: the real firmware runs through bridge-process and power faults on the embedded defaults
// in one run; at the end, what the firmware generated is compared with what the API returns.
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, test } from "vitest"
import { BridgeProcess, freePort } from "../../testkit/infra.js"
import { uid } from "../helpers.js"
import { caughtUp, drivenMeter, finalCheck, powerLoss, sleep, startDriven } from "../fault-util.js"

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
      CITYMETER_MODE: "demo", // meters register with their first frame; anonymous embedded broker
    })
    await bridge.start()
    cleanup.push(() => bridge.stop())
    const meterId = uid("efault")
    const d = drivenMeter(meterId, port)
    cleanup.push(async () => {
      d.stopDriving()
      await d.meter.stop()
    })
    await startDriven(d, bridge, meterId)

    await sleep(1500)
    await bridge.kill()
    await sleep(5000)
    await bridge.start()
    await caughtUp(d.meter, bridge, meterId)

    await powerLoss(d.meter, bridge, meterId)
    await finalCheck("embedded", t0, d, bridge, meterId)
  })
})
