// Issue 20, on the exact citymeter_picow bytecode and the real DeviceScript RP2040 runtime
// (testkit/rp2040) with the harness's ADE7953 model on I2C0 (GP4/GP5, 0x38): a chip that answers
// is set up and measures; one that answers only after its first probe (still in its power-up) is
// picked up by the periodic retry, without a reboot, and the served energy register goes on from
// what the S0 input counted. Before the fix the chip was probed once: a late one was never used.
// (The "answers" test takes in the checks of the harness's own test of a present chip, wt-board.)
import { readFileSync } from "node:fs"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { ADE7953_ADDRESS, ADE7953_REG, Ade7953Model } from "../../testkit/rp2040/ade7953.js"
import { Board, uniqueIdFor } from "../../testkit/rp2040/board.js"
import { QUICK_ADE_RETRY_S, quickMeterImage } from "../../testkit/rp2040/bundle.js"
import { findService, readU32 } from "../../testkit/rp2040/jacdac.js"

// services/electricitymeter.md: identifier 0x1c1e7f02; energy u32 @ reading (0x101, Wh),
// power i32 @ 0x180 (W), voltage u32 @ 0x181 (dV)
const ELECTRICITY = 0x1c1e7f02
const REG_ENERGY = 0x101
const REG_POWER = 0x180
const REG_VOLTAGE = 0x181
const S0_PIN = 15 // boards/citymeter_picow.board.json S0_PULSE
const tunables = JSON.parse(readFileSync("proto/tunables.json", "utf8")) as {
  tunables: Array<{ key: string; default: number }>
}
const IMP_PER_KWH = tunables.tunables.find((t) => t.key === "IMP_PER_KWH")!.default
// firmware/targets/citymeter_picow.ts runs with the Shelly front end's published constants
// (Tasmota, ESPHome): 26,000 VRMS counts per volt, 154 AWATT counts per watt
const VRMS_230V = 26000 * 230
const AWATT_1800W = 154 * 1800
// the probe period, shortened by its setting (ADE_RETRY_S; 30 s by default) so the wait is short
const RETRY_S = QUICK_ADE_RETRY_S
const RETRY_MS = RETRY_S * 1000

/** The bytecode with ADE_RETRY_S provisioned (a chip that answers at once never waits for it). */
let uf2: string
const boards: [string, Board][] = []
const t0 = Date.now()

function boardWith(chip: (b: Board) => Ade7953Model, seed: number): { board: Board; ade: Ade7953Model } {
  const board = new Board({ uf2, uniqueId: uniqueIdFor(seed) })
  const ade = chip(board)
  ade.set(ADE7953_REG.VRMS, VRMS_230V)
  ade.set(ADE7953_REG.AWATT, AWATT_1800W)
  board.i2c[0].attach(ADE7953_ADDRESS, ade)
  return { board, ade }
}

beforeAll(async () => {
  uf2 = (await quickMeterImage()).uf2
}, 600_000)

afterAll(() => {
  for (const [name, b] of boards)
    console.log(`rp2040-ade7953 (${name}): ${b.emulatedMs.toFixed(0)} ms emulated in ${(b.realMs / 1000).toFixed(1)} s`)
  console.log(`rp2040-ade7953: file wall time ${((Date.now() - t0) / 1000).toFixed(1)} s`)
})

describe("citymeter_picow with an ADE7953 on an emulated RP2040", () => {
  test("a chip that answers is set up after the settle time and measures voltage and power", async () => {
    const { board, ade } = boardWith((b) => new Ade7953Model(() => b.emulatedMs), 41)
    boards.push(["present", board])
    await board.waitForLog(/citymeter: ADE7953 v1 measures voltage, power and energy/, 6000)
    // the power-up settings, in the data sheet's order: 0xAD to 0x0FE right before 0x0030 to 0x120
    const regs = ade.writes.map(([r]) => r)
    const at = regs.indexOf(ADE7953_REG.RESERVED_120)
    expect(at).toBeGreaterThan(0)
    expect(regs[at - 1]).toBe(ADE7953_REG.UNLOCK)
    expect(ade.get(ADE7953_REG.RESERVED_120)).toBe(0x30) // the required setting went in
    const s = await findService(board, ELECTRICITY, 3000)
    // it keeps reading the measurement registers (through 0x2xx or 0x3xx), every second
    const readsBefore = ade.reads.length
    await board.runFor(1500)
    expect(ade.reads.slice(readsBefore).map((r) => r & 0xff)).toEqual(expect.arrayContaining([0x1c, 0x12, 0x1e]))
    expect(await readU32(board, s, REG_VOLTAGE)).toBe(2300)
    expect(await readU32(board, s, REG_POWER)).toBe(1800)
    expect(board.log.join("\n")).not.toContain("no ADE7953 on I2C")
  }, 300_000)

  test("a chip still starting at the first probe is taken by the retry; the energy register goes on from S0's count", async () => {
    const { board, ade } = boardWith((b) => new Ade7953Model(() => b.emulatedMs, { answersAfterMs: 6500 }), 42)
    boards.push(["late", board])
    const noChip = await board.waitForLog(/citymeter: no ADE7953 on I2C: S0 pulses count energy/, 6000)
    expect(noChip).toContain(`probed again every ${RETRY_S} s`)

    expect(board.i2c[0].transfers.filter((t) => t.address === ADE7953_ADDRESS && !t.acked).length).toBeGreaterThan(0)
    expect(ade.writes.length).toBe(0)
    // S0 counts meanwhile: 3 impulses (contact to ground, 150 ms at 2 Hz)
    const s = await findService(board, ELECTRICITY, 3000)
    // counted as a difference from the register before the impulses
    await board.runFor(300)
    const start = await readU32(board, s, REG_ENERGY)
    await board.runUntilSettled(board.pins.pulses(S0_PIN, { widthMs: 150, periodMs: 500, count: 3 }), 4000)
    await board.runFor(300) // the last release is sampled and its event delivered
    const s0Wh = await readU32(board, s, REG_ENERGY)
    expect(s0Wh - start).toBe((3 * 1000) / IMP_PER_KWH)
    const late = await board.waitForLog(
      /citymeter: ADE7953 answered late: it counts energy from \d+ Wh on/,
      RETRY_MS + 5000,
    )
    expect(Number(/from (\d+) Wh/.exec(late)![1])).toBe(s0Wh)
    // taken by the retry one period after the probe that found nothing, not by an earlier one
    const ours = board.i2c[0].transfers.filter((t) => t.address === ADE7953_ADDRESS)
    const missed = ours.filter((t) => !t.acked)
    const taken = ours.find((t) => t.acked)!
    const gap = taken.emulatedMs - missed[missed.length - 1].emulatedMs
    console.log(
      `rp2040-ade7953: first probe at ${missed[0].emulatedMs.toFixed(0)} ms, taken at ${taken.emulatedMs.toFixed(0)} ms`,
    )
    expect(gap).toBeGreaterThan(RETRY_MS - 500)
    expect(gap).toBeLessThan(RETRY_MS + 500)
    await board.runFor(1500)
    expect(await readU32(board, s, REG_VOLTAGE)).toBe(2300)
    expect(await readU32(board, s, REG_POWER)).toBe(1800)
    // the register never steps back, and grows with the chip's energy from S0's count on
    const e1 = await readU32(board, s, REG_ENERGY)
    expect(e1).toBeGreaterThanOrEqual(s0Wh)
    await board.runFor(3000)
    expect(await readU32(board, s, REG_ENERGY)).toBeGreaterThanOrEqual(e1)
    // more S0 impulses after the switch are not the meter's energy any more
    const before = await readU32(board, s, REG_ENERGY)
    await board.runUntilSettled(board.pins.pulses(S0_PIN, { widthMs: 150, periodMs: 500, count: 4 }), 4000)
    const after = await readU32(board, s, REG_ENERGY)
    // at 1.8 kW the chip adds 0.5 Wh a second: at most 2 Wh over these 2 s, never the 4 impulses' 4 Wh
    expect(after - before).toBeLessThanOrEqual(2)
  }, 900_000)
})
