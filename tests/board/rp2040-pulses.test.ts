// Pulse inputs on the exact citymeter_picow bytecode and the real DeviceScript RP2040 runtime, on an
// emulated RP2040 (issue 20): the pins are sampled in C by the board's button services (flowPulse on
// GP14, s0Pulse on GP15) and the firmware counts their events (firmware/pulses.ts). Before, S0 used
// subscribeDigital (100 ms JavaScript polling; measured: 30 ms impulses at 10/s, 0 of 91 counted)
// and counted one phantom impulse at every boot.
// The sweep at the end measures the shortest pulse and the highest rate counted, recorded in
// proto/tunables.json pulseInputs. The emulator runs flash writes in no time and has no interrupt
// latency: the stated limits keep a margin over what is measured here.
import { readFileSync } from "node:fs"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { Board, speedLine, uniqueIdFor } from "../../testkit/rp2040/board.js"
import { bundledImage } from "../../testkit/rp2040/bundle.js"
import { findService, readU32, type JdService } from "../../testkit/rp2040/jacdac.js"

// services/waterflow.md and services/electricitymeter.md: the reading (0x101) is mL and Wh
const WATER_FLOW = 0x1c1e7f01
const ELECTRICITY = 0x1c1e7f02
const REG_READING = 0x101
const FLOW_PIN = 14 // boards/citymeter_picow.board.json FLOW_PULSE
const S0_PIN = 15 // S0_PULSE
const schema = JSON.parse(readFileSync(new URL("../../proto/tunables.json", import.meta.url), "utf8")) as {
  tunables: Array<{ key: string; default: number }>
  pulseInputs: { boards: Record<string, { minPulseMs: number; maxPulseHz: number }> }
}
const def = (k: string) => schema.tunables.find((t) => t.key === k)!.default
const ML_PER_PULSE = 1000 / def("PULSES_PER_L")
const WH_PER_IMPULSE = 1000 / def("IMP_PER_KWH")
const LIMITS = schema.pulseInputs.boards.citymeter_picow

let board: Board
let flow: JdService
let s0: JdService
const t0 = Date.now()

beforeAll(async () => {
  const image = await bundledImage("citymeter_picow")
  board = new Board({ uf2: image.uf2, uniqueId: uniqueIdFor(21) })
  await board.waitForLog(/citymeter: board drivers started/, 4000).catch((e: unknown) => {
    console.log(board.log.join("\n"))
    throw e
  })
  flow = await findService(board, WATER_FLOW, 2000)
  s0 = await findService(board, ELECTRICITY, 2000)
}, 300_000)

afterAll(() => {
  if (board)
    console.log(`rp2040-pulses: ${speedLine(board)}; file wall time ${((Date.now() - t0) / 1000).toFixed(1)} s`)
})

/** Pulses counted on `pin` for a train of `count` pulses (mL or Wh read before and after). */
async function counted(pin: number, widthMs: number, periodMs: number, count: number): Promise<number> {
  const service = pin === S0_PIN ? s0 : flow
  const unit = pin === S0_PIN ? WH_PER_IMPULSE : ML_PER_PULSE
  const before = await readU32(board, service, REG_READING)
  await board.runUntilSettled(board.pins.pulses(pin, { widthMs, periodMs, count }), periodMs * count + 2000)
  await board.runFor(200) // the last UP and the register's cache
  const after = await readU32(board, service, REG_READING)
  return (after - before) / unit
}

describe("citymeter_picow pulse inputs on an emulated RP2040 (real runtime, the build's bytecode)", () => {
  test("no phantom impulse or pulse at boot: both counters read 0 with idle inputs", async () => {
    expect(board.log.join("\n")).toContain("citymeter: no ADE7953 on I2C: S0 pulses count energy")
    // the button services set the pull-ups (active low, contact to ground)
    expect(board.pins.pad(S0_PIN)).toMatchObject({ pullUp: true, inputEnabled: true })
    expect(board.pins.pad(FLOW_PIN)).toMatchObject({ pullUp: true, inputEnabled: true })
    // the three buttons bind in the order the program starts them (tamper, flowPulse, s0Pulse):
    // the main program's "tamper" role takes the first, each pulse role its own
    const bound = (role: string) => {
      const m = new RegExp(`set role ${role.replace(/[[\]]/g, "\\$&")} -> (\\w+):(\\d+)`).exec(board.log.join("\n"))
      return m ? Number(m[2]) : NaN
    }
    const [tamper, flowPulse, s0Pulse] = ["tamper", "flowPulse[int:1]", "s0Pulse[int:2]"].map(bound)
    expect(tamper).toBeLessThan(flowPulse)
    expect(flowPulse).toBeLessThan(s0Pulse)
    await board.runFor(500)
    expect(await readU32(board, s0, REG_READING)).toBe(0)
    expect(await readU32(board, flow, REG_READING)).toBe(0)
  }, 120_000)

  test("S0 impulses of 30 ms (IEC 62053-31) at 3.1/s, 10/s and 20/s (the stated limit) all count", async () => {
    expect(await counted(S0_PIN, 30, 320, 5)).toBe(5)
    expect(await counted(S0_PIN, 30, 100, 20)).toBe(20)
    expect(await counted(S0_PIN, 30, 50, 40)).toBe(40)
  }, 300_000)

  test("flow pulses at the limits count: 150 ms reed pulses at 2/s, 20 ms pulses at 25/s", async () => {
    expect(await counted(FLOW_PIN, 150, 500, 4)).toBe(4)
    expect(await counted(FLOW_PIN, LIMITS.minPulseMs, 1000 / LIMITS.maxPulseHz, 40)).toBe(40)
  }, 300_000)

  test("past the limits pulses are lost: 4 ms pulses (under the 9 ms sampling), gaps of 3 ms", async () => {
    expect(await counted(S0_PIN, 4, 100, 10)).toBeLessThan(10)
    expect(await counted(FLOW_PIN, 30, 33, 30)).toBeLessThan(30)
  }, 300_000)

  test("sweep: the shortest pulse and gap, and the highest rate, counted exactly (recorded in proto/tunables.json)", async () => {
    const rows: string[] = []
    // widths with 60 ms periods; then 20 ms pulses with shorter and shorter gaps
    let minWidth = Infinity
    for (const w of [18, 15, 12, 9, 6]) {
      const n = await counted(S0_PIN, w, 60, 10)
      rows.push(`width ${w} ms, period 60 ms: ${n} of 10`)
      if (n === 10) minWidth = Math.min(minWidth, w)
    }
    let maxHz = 0
    for (const gap of [16, 13, 10, 7, 4]) {
      const n = await counted(S0_PIN, 20, 20 + gap, 20)
      rows.push(`20 ms pulses, gaps ${gap} ms (${(1000 / (20 + gap)).toFixed(1)}/s): ${n} of 20`)
      if (n === 20) maxHz = Math.max(maxHz, 1000 / (20 + gap))
    }
    console.log(`rp2040-pulses sweep (S0_PULSE, GP15):\n  ${rows.join("\n  ")}`)
    // what the repository states is within what was measured
    expect(minWidth).toBeLessThanOrEqual(LIMITS.minPulseMs)
    expect(maxHz).toBeGreaterThanOrEqual(LIMITS.maxPulseHz)
  }, 600_000)
})
