// Issue 20: what a board cannot do is refused before a meter is built for it. The pressure pin
// stays inside its ADC's linear range up to a faulty sensor's output; a Pico W (no TLS in its
// runtime) is never given an mqtts:// broker, at provision, build or deploy; a unit's calibrations
// are written to its settings and fit the smallest settings bank.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, test } from "vitest"
import { storageBudget } from "../../bridge/src/tunables/storage-budget.js"
import { SENSOR_FAULT_V, boardHardwareErrors, customBoard, settingsBankBytes, tlsError } from "../../cli/boards.js"
import { parseEnvSettings } from "../../sim/src/settings-files.js"
import { runCitymeter } from "../../testkit/process.js"

const BOARDS = ["citymeter_esp32c3", "citymeter_esp32s3", "citymeter_picow"]
const citymeter = async (...args: string[]) => {
  const r = await runCitymeter(args)
  return { ...r, code: r.code ?? 1 }
}
const tmp = () => join(mkdtempSync(join(tmpdir(), "cm-limits-")), "meter")

describe("the pressure pin stays inside the ADC's linear range", () => {
  test("the fault level is full range on a supply 5 % high plus the driver's 0.1 V open/short margin", () => {
    expect(SENSOR_FAULT_V).toBeCloseTo(4.825, 6)
  })
  test.each(BOARDS)("%s: the shipped divider keeps 4.825 V inside $adcLinearMaxV", (id) => {
    const b = customBoard(id)!
    expect(typeof b.$adcLinearMaxV).toBe("number")
    expect(SENSOR_FAULT_V * (b.$pressureDivider as number)).toBeLessThanOrEqual(b.$adcLinearMaxV as number)
    expect(boardHardwareErrors(id)).toEqual([])
  })
  test("the ESP32-S3's former 2/3 divider (0.66) is refused: 3.18 V is past its linear 2.9 V", () => {
    const b = structuredClone(customBoard("citymeter_esp32s3")!)
    b.$pressureDivider = 0.66
    expect(boardHardwareErrors("citymeter_esp32s3", b).join()).toMatch(
      /4\.825 V .* x \$pressureDivider 0\.66 = 3\.18 V at the pin, over the ADC's linear range \(\$adcLinearMaxV 2\.9 V\): use a divider of at most 0\.601/,
    )
  })
  test("a board file without its linear range, or with one above full scale, is refused", () => {
    const b = structuredClone(customBoard("citymeter_esp32c3")!)
    delete b.$adcLinearMaxV
    expect(boardHardwareErrors("citymeter_esp32c3", b).join()).toMatch(/must state \$adcFullScaleV, \$adcLinearMaxV/)
    b.$adcLinearMaxV = 2.6
    expect(boardHardwareErrors("citymeter_esp32c3", b).join()).toMatch(/above the ADC's full scale 2\.5 V/)
  })
  test("the Pico W reads its pressure pin in the GPIO AnalogIn mode: no analog service holds GP26", () => {
    // a pin a board service uses is left out of the runtime's GPIO pins (impl_gpio.c valid_pin), and
    // only the AnalogIn mode switches the pad's pull-down off (drivers/pressure.ts analogPinInput)
    const b = customBoard("citymeter_picow")!
    const services = (b.$services as { pin?: string }[]).map((s) => s.pin)
    expect(services).not.toContain("PRESS_ADC")
    expect(readFileSync("firmware/targets/citymeter_picow.ts", "utf8")).toMatch(/analogPinInput\(pins\.PRESS_ADC\)/)
  })
})

describe("no mqtts:// for a Pico W: its runtime has no TLS", () => {
  test("every rp2040w board is refused, with why and what to do; ESP32 boards are not", () => {
    for (const id of ["citymeter_picow", "pico_w"]) {
      const why = tlsError(id)
      expect(why).toMatch(/has no TLS/)
      expect(why).toMatch(/sealed end to end/)
      expect(why).toMatch(/mqtt:\/\/ on a network you trust, or an ESP32 board/)
    }
    for (const id of ["citymeter_esp32c3", "citymeter_esp32s3", "sim", "pico"]) expect(tlsError(id)).toBeUndefined()
  })
  test.concurrent("provision refuses mqtts:// for citymeter_picow with exit code 2 and writes nothing", async () => {
    const dir = tmp()
    const r = await citymeter(
      ...["provision", "-m", "pw-1", "-b", "citymeter_picow", "-u", "mqtts://broker.city.example:8883", "-o", dir],
    )
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/^citymeter: error: citymeter_picow \(rp2040w\) cannot use mqtts:\/\//)
    expect(existsSync(dir)).toBe(false)
  })
  test.concurrent("provision takes mqtt:// for the Pico W and mqtts:// for an ESP32 board", async () => {
    const a = await citymeter(
      ...["provision", "-m", "pw-2", "-b", "citymeter_picow", "-u", "mqtt://10.0.0.2", "-o", tmp()],
    )
    expect(a.code).toBe(0)
    const b = await citymeter(
      ...["provision", "-m", "c3-2", "-b", "citymeter_esp32c3", "-u", "mqtts://broker:8883", "-o", tmp()],
    )
    expect(b.code).toBe(0)
  })
  test.concurrent(
    "build and deploy refuse Pico W settings that ask for TLS (written by hand or an older CLI)",
    async () => {
      const dir = tmp()
      mkdirSync(dir, { recursive: true })
      writeFileSync(
        join(dir, ".env.defaults"),
        'METER_ID="pw-3"\nBOARD="citymeter_picow"\nMQTT_HOST="broker"\nMQTT_PORT=8883\nMQTT_PROTO="tls"\n',
      )
      for (const cmd of ["build", "deploy"]) {
        const r = await citymeter(cmd, "-b", "citymeter_picow", "--settings", dir)
        expect(r.code).toBe(2)
        expect(r.stderr).toMatch(/ask for TLS: citymeter_picow \(rp2040w\) cannot use mqtts:\/\//)
      }
    },
  )
})

describe("a unit's calibrations go to its settings", () => {
  test.concurrent("--pressure-cal and --ade-cal write P_CAL and ADE_CAL", async () => {
    const dir = tmp()
    const r = await citymeter(
      ...["provision", "-m", "cal-1", "-b", "citymeter_picow", "-u", "mqtt://10.0.0.2", "-o", dir],
      ...["--pressure-cal", "0:525,800000:3885", "--ade-cal", "1012000,-150,998000,0,1010000,25"],
    )
    expect(r.code).toBe(0)
    const s = parseEnvSettings(readFileSync(join(dir, ".env.defaults"), "utf8"))
    expect(s.P_CAL).toEqual([525, 0, 3885, 800000])
    expect(s.ADE_CAL).toEqual([1012000, -150, 998000, 0, 1010000, 25])
  })
  const bad: [string, string[], RegExp][] = [
    ["one point", ["--pressure-cal", "0:525"], /expects two points PA:MV,PA:MV/],
    ["points 50 kPa apart", ["--pressure-cal", "0:525,50000:735"], /at least 100000 Pa above the first/],
    ["a falling output", ["--pressure-cal", "0:3885,800000:525"], /must rise with pressure/],
    ["a pressure over 50 bar", ["--pressure-cal", "0:525,6000000:3885"], /at most 5000000 Pa/],
    ["five ADE values", ["--ade-cal", "1,2,3,4,5"], /expects six integers/],
    ["an ADE gain of 3", ["--ade-cal", "3000000,0,1000000,0,1000000,0"], /gains must be 500000\.\.2000000 ppm/],
  ]
  for (const [what, args, message] of bad)
    test.concurrent(`refuses ${what} with exit code 2`, async () => {
      const dir = tmp()
      const r = await citymeter(
        ...["provision", "-m", "cal-2", "-b", "citymeter_picow", "-u", "mqtt://10.0.0.2", "-o", dir, ...args],
      )
      expect(r.code).toBe(2)
      expect(r.stderr).toMatch(message)
      expect(existsSync(dir)).toBe(false)
    })
  test("the calibrations at their longest still fit the Pico W's settings bank with the full queue", () => {
    const b = storageBudget(settingsBankBytes("citymeter_picow"), {
      P_CAL: [6000, 5000000, 6000, 5000000],
      ADE_CAL: [2000000, -1000000, 2000000, -1000000, 2000000, -1000000],
    })
    expect(b.freeBytes).toBeGreaterThanOrEqual(0)
  })
})
