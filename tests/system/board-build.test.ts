// One bytecode: `citymeter build --board B` (the CLI process) compiles the board's
// target; the simulator runs that very file against the broker; the bridge stores its readings.
// On a board the drivers serve the sensor roles; in the VM there are no pins, and the simulated
// Jacdac sensors do.
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { boardHardwareErrors, customBoard } from "../../cli/boards.js"
import { sha256 } from "../../cli/build.js"
import { SimMeter } from "../../sim/src/meter.js"
import { parseEnvSettings } from "../../sim/src/settings-files.js"
import { runCitymeter } from "../../testkit/process.js"
import { apiReadings, startStack, uid, waitFor, type TestStack } from "../helpers.js"

const BOARDS = ["citymeter_esp32c3", "citymeter_esp32s3", "citymeter_picow"]

const citymeter = async (...args: string[]) => {
  const r = await runCitymeter(args)
  return { ...r, code: r.code ?? 1 }
}

describe("board definitions: the metering IC's I2C pins are checked at build time", () => {
  const withI2c = (id: string, i2c: unknown, pins: Record<string, number> = {}) => {
    const b = structuredClone(customBoard(id)!)
    b.i2c = i2c
    Object.assign(b.pins as Record<string, number>, pins)
    return boardHardwareErrors(id, b)
  }
  test.each(BOARDS)("%s: the shipped definition has I2C and passes", (board) => {
    expect(customBoard(board)!.i2c).toMatchObject({ pinSDA: expect.any(Number), pinSCL: expect.any(Number) })
    expect(boardHardwareErrors(board)).toEqual([])
  })
  test("strapping pins, a line shared with a sensor, RP2040 pin pairs and the clock are refused", () => {
    expect(withI2c("citymeter_esp32c3", { pinSDA: 8, pinSCL: 10 }).join()).toMatch(/SDA is on GPIO8, a strapping pin/)
    expect(withI2c("citymeter_esp32s3", { pinSDA: 4, pinSCL: 46 }).join()).toMatch(
      /SDA on GPIO4 is also pin FLOW_PULSE.*SCL is on GPIO46, a strapping pin/,
    )
    expect(withI2c("citymeter_picow", { pinSDA: 5, pinSCL: 4 }).join()).toMatch(/RP2040 I2C needs SDA on an even/)
    expect(withI2c("citymeter_picow", { pinSDA: 4, pinSCL: 7 }).join()).toMatch(/of one block/)
    // GP6/GP7 is a valid I2C1 pair (here only refused as the board's free pins GP6, GP7)
    expect(withI2c("citymeter_picow", { pinSDA: 6, pinSCL: 7 }).join()).not.toMatch(/RP2040 I2C needs/)
    expect(withI2c("citymeter_esp32c3", { pinSDA: 4, pinSCL: 10, kHz: 1000 }).join()).toMatch(
      /over the ADE7953's 400 kHz/,
    )
    expect(withI2c("citymeter_esp32c3", { pinSDA: 4 }).join()).toMatch(/two different GPIO numbers/)
    expect(withI2c("citymeter_esp32c3", { pinSDA: 4, pinSCL: 10 }, { P4: 4 }).join()).toMatch(/also pin P4/)
  })
})

describe("board definitions: the pulse inputs are button services sampled in C (issue 20)", () => {
  test.each(BOARDS)("%s: flowPulse and s0Pulse are active-low button services on FLOW_PULSE and S0_PULSE", (board) => {
    const services = customBoard(board)!.$services as Array<Record<string, unknown>>
    expect(services).toContainEqual({ name: "flowPulse", service: "button", pin: "FLOW_PULSE" })
    expect(services).toContainEqual({ name: "s0Pulse", service: "button", pin: "S0_PULSE" })
  })
  test("a board without them, with an active-high one, or without pulse limits is refused", () => {
    const b = structuredClone(customBoard("citymeter_picow")!)
    const services = b.$services as Array<Record<string, unknown>>
    b.$services = services.filter((s) => s.name !== "s0Pulse")
    expect(boardHardwareErrors("citymeter_picow", b).join()).toMatch(/\$services needs \{"name": "s0Pulse"/)
    const high = structuredClone(customBoard("citymeter_esp32c3")!)
    for (const s of high.$services as Array<Record<string, unknown>>) if (s.name === "flowPulse") s.activeHigh = true
    expect(boardHardwareErrors("citymeter_esp32c3", high).join()).toMatch(/flowPulse must be active low/)
    expect(boardHardwareErrors("citymeter_new", customBoard("citymeter_esp32s3")).join()).toMatch(
      /citymeter_new: proto\/tunables.json pulseInputs.boards has no pulse limits/,
    )
  })
})

describe("each board's build runs in the simulator and its readings are stored", () => {
  let stack: TestStack
  const dir = mkdtempSync(join(tmpdir(), "citymeter-boards-"))
  const meters: SimMeter[] = []
  beforeAll(async () => {
    stack = await startStack("mosquitto+postgres")
  })
  afterAll(async () => {
    for (const m of meters) await m.stop()
    await stack?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  test.each(BOARDS)(
    "%s: provision, citymeter build, run that .devs in the VM, readings in the bridge",
    async (board) => {
      const meterId = uid(board.replace(/_/g, "-"))
      const url = new URL(stack.mqttUrl)
      const settings = join(dir, meterId)
      const p = await citymeter(
        "provision", "-m", meterId, "-b", board, "-u", `mqtt://${url.hostname}:${url.port}`,
        "-i", "1", "--batch", "2", "--open", "-o", settings,
      ) // prettier-ignore
      expect(p.code, p.stderr).toBe(0)
      expect(p.stdout).toContain(`next: citymeter deploy`)
      const b = await citymeter("build", "--board", board, "--settings", settings)
      expect(b.code, b.stderr + b.stdout).toBe(0)
      expect(b.stdout).toContain(`(firmware/targets/${board}.ts)`)
      expect(b.stdout).toContain(`next: citymeter flash --board ${board} --program`)
      const out = join(settings, "build")
      const file = join(out, "bytecode.devs")
      const manifest = JSON.parse(readFileSync(join(out, "build.json"), "utf8"))
      expect(manifest).toMatchObject({ board, entry: `firmware/targets/${board}.ts`, sha256: sha256(file) })
      // the build folder holds this meter's settings, nobody else's
      expect(readFileSync(join(out, ".env.defaults"), "utf8")).toContain(`METER_ID="${meterId}"`)

      // the build's own settings, as a board gets them with its program
      const built = parseEnvSettings(readFileSync(join(out, ".env.defaults"), "utf8"))
      const meter = new SimMeter({ meterId, bytecodeFile: file, settings: built, water: "register" })
      meters.push(meter)
      meter.setWater({ volumeMl: 5000 })
      meter.setElectricity({ energyWh: 100, powerW: 321, voltageDv: 2310 })
      meter.setPressure(333_000)
      await meter.start()
      await meter.waitForLine(new RegExp(`start: citymeter firmware/targets/${board}`))
      await meter.waitForLine(/no pins: the simulated sensors serve the roles/)
      const rows = await waitFor(
        `${board} readings`,
        async () => {
          const r = await apiReadings(stack, meterId)
          return r.length >= 4 && r
        },
        30000,
      )
      for (const r of rows.slice(1)) {
        expect(r.pressureAvgPa).toBe(333_000)
        expect(r.powerW).toBe(321)
        expect(r.voltageDv).toBe(2310)
      }
      expect(rows[rows.length - 1].waterTotalMl).toBe(5000)
      const m = (await stack.app.inject({ url: `/meters/${meterId}` })).json()
      expect(m.board).toBe(board)
      console.log(
        `${board}: ran ${file} (${statSync(file).size} B, sha256 ${manifest.sha256.slice(0, 12)}), ${rows.length} readings stored`,
      )
      await meter.stop()
    },
    120_000,
  )
})
