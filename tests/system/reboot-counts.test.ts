// Counts across a reboot (issue 20). On a board the water meter's pulses are counted by the
// firmware, in RAM: while the meter is off or restarting they are lost, and the firmware cannot
// know how many. The simulator's default meter is such a pulse output (sim/src/meter.ts, the
// Pico W build). So the first frame of a boot says its counts may be incomplete
// (ReadingBatch.after_reboot), and the bridge stores that on the frame's first interval, where
// billing reads it (readings.after_reboot, API, CSV).
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, test } from "vitest"
import { SimMeter } from "../../sim/src/meter.js"
import { uid, waitFor } from "../helpers.js"
import { caughtUp, embeddedBridge, generated, sleep, type Row } from "../fault-util.js"

describe("counts across a reboot", () => {
  const cleanup: (() => Promise<void>)[] = []
  afterAll(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {})
  })

  test("a meter rebooted mid-interval loses what it could not count, and its next frame says so", async () => {
    const { bridge, port } = await embeddedBridge()
    await bridge.start()
    cleanup.push(() => bridge.stop())
    const meterId = uid("reboot")
    // the default: a pulse output (1 pulse per litre) counted by the Pico W build's driver
    const meter = new SimMeter({
      meterId,
      flashFile: join(mkdtempSync(join(tmpdir(), "cm-flash-")), "flash.bin"),
      settings: { MQTT_HOST: "127.0.0.1", MQTT_PORT: port, INTERVAL_S: 2, BATCH: 1 },
    })
    expect(meter.pulseTrain).toBeDefined()
    meter.setElectricity({ energyWh: 10, powerW: 100, voltageDv: 2300 })
    meter.setPressure(300_000)
    cleanup.push(() => meter.stop())
    meter.setWaterFlow(120_000) // 2 L/s: 2 pulses/s, well within the polling

    await meter.start()
    await waitFor("frames of the first boot", async () => generated(meter).size >= 3, 30_000)
    await caughtUp(meter, bridge, meterId)
    // power lost in the middle of an interval; the water keeps flowing, unseen
    await sleep(900)
    const pulsedBeforeCut = meter.pulsedWaterMl
    await meter.stop()
    await sleep(3000)
    const pulsedWhileOff = meter.pulsedWaterMl - pulsedBeforeCut
    const firstBootFrames = generated(meter).size
    await meter.start()
    await waitFor("frames of the next boot", async () => generated(meter).size >= firstBootFrames + 3, 30_000)
    meter.setWaterFlow(0)
    await caughtUp(meter, bridge, meterId)
    await meter.stop()
    const pulsed = meter.pulsedWaterMl

    const rows = (await bridge.get<{ readings: Row[] }>(`/meters/${meterId}/readings`)).readings
    const boots = [...new Set(rows.map((r) => r.boot))].sort((a, b) => a - b)
    expect(boots).toHaveLength(2)
    for (const boot of boots) {
      const ofBoot = rows.filter((r) => r.boot === boot).sort((a, b) => a.seq - b.seq || a.idx - b.idx)
      // the boot's first interval, and only it, says counts may be missing before it
      expect(ofBoot.map((r) => r.afterReboot)).toEqual(ofBoot.map((_, i) => i === 0))
    }
    // the totals chain without a break, and what the meter could not count is missing from them
    const stored = Math.max(...rows.map((r) => r.waterTotalMl))
    console.log(
      `reboot: ${pulsedWhileOff} mL pulsed while off; pulsed ${pulsed} mL in all, stored total ${stored} mL; lost ${pulsed - stored} mL`,
    )
    expect(stored).toBeLessThan(pulsed)
    expect(pulsed - stored).toBeGreaterThanOrEqual(pulsedWhileOff)
    // the CSV carries the flag too
    const csv = await (await fetch(`${bridge.apiUrl}/meters/${meterId}/readings?format=csv`)).text()
    const lines = csv.trim().split(/\r?\n/)
    const header = lines[0].split(",")
    const col = header.indexOf("afterReboot")
    expect(col).toBeGreaterThan(0)
    expect(lines.slice(1).filter((l) => l.split(",")[col] === "true")).toHaveLength(2)
  }, 120_000)
})
