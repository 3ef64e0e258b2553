// The hardware watchdog of our RP2040 image (vendor/rp2040-runtime/patches/0002-pico-hardware-watchdog.patch),
// on the emulated board with the exact citymeter_picow bytes (issue 20). Upstream's Pico runtime
// never turns the RP2040 watchdog on, and pico-sdk's blocking I2C calls have no timeout, so a bus
// held low hangs the meter for good; ours resets it.
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { Board, speedLine, uniqueIdFor } from "../../testkit/rp2040/board.js"
import { bundledImage, type BundledImage } from "../../testkit/rp2040/bundle.js"
import { UPSTREAM_RUNTIME_UF2, withRuntime } from "../../testkit/rp2040/power-cut.js"

/** The RP2040 watchdog block (rp2040js RPWatchdog at 0x40058000), the parts tests use. */
interface Watchdog {
  enable: boolean
  reason: number
}
const watchdogOf = (b: Board) => b.rp2040.findPeripheral(0x40058000) as unknown as Watchdog
const CHIP = uniqueIdFor(58)
const WATCHDOG_MS = 8000 // the patch's CITYMETER_WATCHDOG_MS

let image: BundledImage
let flash: Uint8Array
const t0 = Date.now()

beforeAll(async () => {
  image = await bundledImage("citymeter_picow")
  flash = new Board({ uf2: image.uf2, uniqueId: CHIP }).flashImage()
}, 600_000)

afterAll(() => console.log(`rp2040-watchdog: file wall time ${((Date.now() - t0) / 1000).toFixed(1)} s`))

describe("the RP2040 hardware watchdog", () => {
  test("upstream's runtime leaves it off; ours has it on once the store is mounted", async () => {
    const upstream = new Board({ flash: withRuntime(flash, UPSTREAM_RUNTIME_UF2), uniqueId: CHIP })
    await upstream.waitForLog(/fstor: mounted/, 1000)
    await upstream.runFor(50)
    expect(watchdogOf(upstream).enable).toBe(false)

    const ours = new Board({ flash, uniqueId: CHIP })
    await ours.waitForLog(/fstor: mounted/, 1000)
    await ours.runFor(50)
    expect(watchdogOf(ours).enable).toBe(true)
  }, 300_000)

  test("an I2C bus held low hangs the runtime; the watchdog resets it, and with the bus free the meter runs", async () => {
    const board = new Board({ flash, uniqueId: CHIP })
    board.i2c[0].stuck = true
    // the program probes the ADE7953 about 2.4 s after reset; the watchdog expires 8 s later
    await board.runUntil(() => board.watchdogResetAtMs !== undefined, WATCHDOG_MS + 4000)
    const firedAt = board.watchdogResetAtMs
    expect(firedAt, "the watchdog reset the hung chip").toBeDefined()
    // the hang was an I2C call that never returned: its transfer is the last one, and nothing ran after
    const lastTransfer = board.i2c[0].transfers.at(-1)!
    expect(lastTransfer.acked).toBe(false)
    expect(firedAt! - lastTransfer.emulatedMs).toBeGreaterThanOrEqual(WATCHDOG_MS - 1100)
    expect(firedAt! - lastTransfer.emulatedMs).toBeLessThanOrEqual(WATCHDOG_MS + 100)
    console.log(
      `rp2040-watchdog: reset ${(firedAt! - lastTransfer.emulatedMs).toFixed(0)} ms after the stuck transfer; ${speedLine(board)}`,
    )

    // the reboot: the watchdog's reason register survives a watchdog reset (RP2040 data sheet 4.7)
    const again = new Board({ flash: board.flashImage(), uniqueId: CHIP })
    watchdogOf(again).reason = 1
    await again.waitForLog(/citymeter: board drivers started/, 4000)
    expect(again.log.join("\n")).toContain("citymeter: reset by the watchdog")
  }, 600_000)
})
