// The bytes `citymeter build --board citymeter_picow` produces, bundled with the real DeviceScript
// RP2040 runtime (vendor/rp2040-runtime), booted on an emulated RP2040 (issue 20): the program
// starts, binds its roles, starts the board drivers, and counts water-flow pulses on GP14 exactly.
// One emulated second costs several real seconds: each step runs only as long as it must.
import { readFileSync } from "node:fs"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { Board, speedLine, uniqueIdFor } from "../../testkit/rp2040/board.js"
import { bundledImage, type BundledImage } from "../../testkit/rp2040/bundle.js"
import { findService, readU32 } from "../../testkit/rp2040/jacdac.js"

// services/waterflow.md: identifier 0x1c1e7f01, `volume: u32 @ reading` (0x101), millilitres
const WATER_FLOW = 0x1c1e7f01
const REG_READING = 0x101
const FLOW_PIN = 14 // boards/citymeter_picow.board.json FLOW_PULSE
const tunables = JSON.parse(readFileSync(new URL("../../proto/tunables.json", import.meta.url), "utf8")) as {
  tunables: Array<{ key: string; default: number }>
}
const PULSES_PER_L = tunables.tunables.find((t) => t.key === "PULSES_PER_L")!.default

let image: BundledImage
let board: Board
const t0 = Date.now()

// the build and bundle wait their turn behind other bundles (a lock): a generous hook timeout
beforeAll(async () => {
  image = await bundledImage("citymeter_picow")
  board = new Board({ uf2: image.uf2, uniqueId: uniqueIdFor(20) })
}, 600_000)

afterAll(() => {
  if (board) console.log(`rp2040-boot: ${speedLine(board)}; file wall time ${((Date.now() - t0) / 1000).toFixed(1)} s`)
})

describe("citymeter_picow on an emulated RP2040 (real runtime, the build's bytecode)", () => {
  test("boots the build's program: its sha256, roles bound, board drivers started, S0 without an ADE7953", async () => {
    await board.waitForLog(/citymeter: board drivers started/, 4000)
    const log = board.log.join("\n")
    // the runtime prints the sha256 of the program it runs: the build's, byte for byte
    expect(log).toContain(`DevS-SHA256: ${image.sha256}`)
    expect(log).toMatch(/board is: Pico\n/) // GP29 reads VSYS/3 >= 204 raw: not taken for a Pico W
    expect(log).toMatch(/\* start: citymeter firmware\/targets\/citymeter_picow/)
    expect(log).toMatch(/citymeter: meter m-[0-9a-f]{16} boot \d+/)
    expect(log).toContain("citymeter: no ADE7953 on I2C: S0 pulses count energy")
    // the I2C probe of 0x38 was NACKed and did not hang (rp2040js's abort fix)
    expect(board.i2c[0].transfers.some((t) => t.address === 0x38 && !t.acked)).toBe(true)
    // roles bind to the board's own services only with a non-zero device id, which comes from the
    // flash chip's unique id (rolemgr.c): the flash model's 0x4B answer reached the runtime.
    // The program makes its roles after reading every queue slot (firmware/store.ts load: 27
    // settings reads, about 1 s of emulated time on this runtime), so they bind about 1.1 s after
    // the drivers' line (0.6 s when the store read only its state record)
    await board.waitForLog(/set role CitymeterWaterFlow0 -> /, 2000)
  })

  test("flow pulses of 150 ms at 2 Hz on GP14 (reed to ground, pull-up) are counted exactly", async () => {
    expect(board.pins.pad(FLOW_PIN)).toMatchObject({ pullUp: true, inputEnabled: true })
    const flow = await findService(board, WATER_FLOW, 2000)
    const before = await readU32(board, flow, REG_READING)
    const count = 6
    await board.runUntilSettled(board.pins.pulses(FLOW_PIN, { widthMs: 150, periodMs: 500, count }), 4000)
    await board.runFor(250) // the last release is sampled and its event delivered
    const after = await readU32(board, flow, REG_READING)
    expect(board.pins.pulsesDone.get(FLOW_PIN)).toBe(count)
    expect(after - before).toBe((count * 1000) / PULSES_PER_L)
  })

  test("a fresh boot from the flash image keeps the store: the boot counter goes up by one", async () => {
    const boot = (b: Board) => Number(/ boot (\d+) /.exec(b.log.join("\n"))?.[1])
    const first = boot(board)
    const again = new Board({ flash: board.flashImage(), uniqueId: uniqueIdFor(20) })
    await again.waitForLog(/citymeter: meter m-/, 3000)
    expect(boot(again)).toBe(first + 1)
    // the same chip id, the same meter id
    const id = (b: Board) => /meter (m-[0-9a-f]+)/.exec(b.log.join("\n"))?.[1]
    expect(id(again)).toBe(id(board))
    console.log(`rp2040-boot (second board): ${speedLine(again)}`)
  })
})
