// The citymeter_picow build with an ADE7953 on I2C0 (SDA GP4, SCL GP5, address 0x38): the firmware
// finds the metering IC, sets it up and reads it, instead of falling back to S0 pulses. The IC is
// testkit/rp2040/ade7953.ts, written from the data sheet (not from the firmware's driver).
import { afterAll, beforeAll, expect, test } from "vitest"
import { ADE7953_ADDRESS, ADE7953_REG, Ade7953Model } from "../../testkit/rp2040/ade7953.js"
import { Board, speedLine, uniqueIdFor } from "../../testkit/rp2040/board.js"
import { bundledImage } from "../../testkit/rp2040/bundle.js"

let board: Board
let ade: Ade7953Model
const t0 = Date.now()

beforeAll(async () => {
  const image = await bundledImage("citymeter_picow")
  board = new Board({ uf2: image.uf2, uniqueId: uniqueIdFor(7953) })
  ade = new Ade7953Model(() => board.emulatedMs)
  board.i2c[0].attach(ADE7953_ADDRESS, ade)
  // a live line: some RMS voltage, current and active power counts
  ade.set(ADE7953_REG.VRMS, 5_000_000)
  ade.set(ADE7953_REG.IRMSA, 200_000)
  ade.set(ADE7953_REG.AWATT, 70_000)
}, 600_000)

afterAll(() => {
  if (board)
    console.log(`rp2040-ade7953: ${speedLine(board)}; file wall time ${((Date.now() - t0) / 1000).toFixed(1)} s`)
})

test("with an ADE7953 answering at 0x38 the firmware sets it up and measures with it, not S0", async () => {
  const used = await board.waitForLog(/citymeter: ADE7953 v\d+ measures voltage, power and energy/, 4000)
  expect(used).toContain("ADE7953 v1 ") // the model's Version register (0x702)
  await board.waitForLog(/citymeter: board drivers started/, 1000)
  expect(board.log.join("\n")).not.toContain("no ADE7953 on I2C")
  // the data sheet's required setting went in, behind its unlock
  expect(ade.get(ADE7953_REG.RESERVED_120)).toBe(0x30)
  expect(ade.writes.findIndex(([r, v]) => r === 0x0fe && v === 0xad)).toBeLessThan(
    ade.writes.findIndex(([r]) => r === 0x120),
  )
  // and it keeps reading the measurement registers (through 0x2xx or 0x3xx)
  const readsBefore = ade.reads.length
  await board.runFor(1200)
  const polled = ade.reads.slice(readsBefore).map((r) => r & 0xff)
  expect(polled).toEqual(expect.arrayContaining([0x1c, 0x12, 0x1e])) // VRMS, AWATT, AENERGYA
})
