// No silent loss on a re-flash or settings wipe: the real firmware runs against the
// bridge, its simulated flash is erased mid-run (boot counter, queue and totals with it), and every
// reading it generated in each life is stored. A meter without a boot counter starts at a random
// boot in [2^21, 2^28) (firmware/flash-records.ts firstBoot), so a new life lands far ahead of or far behind
// the last one: both must be taken as a new life, counted and logged, never refused or dropped.
import { afterAll, describe, expect, test } from "vitest"
import { uid, waitFor } from "../helpers.js"
import { caughtUp, compare, drivenMeter, embeddedBridge, generated, sleep, type Row } from "../fault-util.js"

const LOW = 2 ** 21

describe("flash wipe", () => {
  const cleanup: (() => Promise<void>)[] = []
  afterAll(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {})
  })

  test("a wiped meter's readings are all stored, in both directions of the new boot", async () => {
    const { bridge, port } = await embeddedBridge()
    await bridge.start()
    cleanup.push(() => bridge.stop())
    const meterId = uid("wipe")
    const d = drivenMeter(meterId, port)
    cleanup.push(async () => {
      d.stopDriving()
      await d.meter.stop()
    })
    const settings = d.meter.options.settings!
    const bootsOf = () => [...new Set([...generated(d.meter).keys()].map((k) => Number(k.split("/")[0])))]
    /** One life: starts the meter (with BOOT preset, as if its random first boot had drawn it), runs, catches up. */
    const life = async (presetBoot?: number) => {
      if (presetBoot !== undefined) settings.BOOT = presetBoot
      const before = generated(d.meter).size
      await d.meter.start()
      delete settings.BOOT // deployed once: the firmware counts on from it
      await waitFor("frames of this life", async () => generated(d.meter).size >= before + 6, 30_000)
      await caughtUp(d.meter, bridge, meterId)
    }
    const wipe = async () => {
      await d.meter.stop()
      d.meter.wipeFlash()
      await sleep(1500)
    }
    const storedRows = async () => (await bridge.get<{ readings: Row[] }>(`/meters/${meterId}/readings`)).readings
    d.startDriving()

    // life 1 at the bottom of the range: the next (random) life is almost surely > 10,000 ahead
    await life(LOW)
    await wipe()
    // life 2: the firmware's own random first boot
    await life()
    await wipe()
    // life 3 near the bottom again: far behind life 2 (a boot regression), clear of life 1's boot
    await life(LOW + 500)
    await d.meter.stop()

    const boots = bootsOf()
    expect(boots.length).toBe(3)
    const rows = await storedRows()
    const counts = compare(d.meter, rows)
    const metrics = await (await fetch(`${bridge.apiUrl}/metrics`)).text()
    const regressions = Number(/^citymeter_boot_regressions_total (\d+)/m.exec(metrics)?.[1] ?? 0)
    const logged = bridge.output.filter((l) => /new life|boot counter went back/.test(l)).length
    console.log(
      `flash wipe: boots ${boots.join(" → ")}; generated ${counts.generated}, stored ${counts.stored}, lost ${counts.missing}, duplicates ${counts.duplicates}; new lives counted ${regressions}, logged ${logged}`,
    )
    expect(counts.missing).toBe(0)
    expect(counts.duplicates).toBe(0)
    expect(counts.stored).toBe(counts.generated)
    // both wipes were noticed: counted and logged, not only stored
    expect(regressions).toBe(2)
    expect(logged).toBe(2)
    // no frame of a new life collided with a stored one
    expect(metrics).not.toMatch(/citymeter_frames_rejected_total\{reason="CM_ERR_CONFLICT"\} [1-9]/)
  })
})
