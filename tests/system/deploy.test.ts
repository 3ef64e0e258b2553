// `citymeter deploy` and `flash` as a field engineer runs them, as processes: provision
// → build → one image of runtime + the build's bytecode + its settings → flash. Here no board is
// attached and there is no internet: each says so in one line.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, test } from "vitest"
import { runCitymeter } from "../../testkit/process.js"

const citymeter = async (...args: string[]) => {
  const r = await runCitymeter(args)
  return { ...r, code: r.code ?? 1 }
}

describe("citymeter deploy and flash", () => {
  const dir = mkdtempSync(join(tmpdir(), "citymeter-deploy-"))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  test("--port is refused for an RP2040 board and a missing port is 'no device'", async () => {
    const pico = await citymeter("flash", "--board", "citymeter_picow", "--port", "/dev/ttyUSB0")
    expect(pico.code).toBe(2)
    expect(pico.stderr).toMatch(/--port does not apply to citymeter_picow: RP2040 boards are flashed as a USB drive/)
    const esp = await citymeter("flash", "--board", "citymeter_esp32c3", "--port", join(dir, "ttyUSB9"))
    expect(esp.code).toBe(1)
    expect(esp.stderr.trim().split("\n")).toEqual([
      `citymeter: error: no device at ${join(dir, "ttyUSB9")}: connect the citymeter_esp32c3 board and retry`,
    ])
  })

  test("with no RP2040 drive attached, flash says 'no device', not 'no internet'", async () => {
    const image = join(dir, "runtime.uf2")
    writeFileSync(image, Buffer.alloc(512, 0xff))
    const r = await citymeter("flash", "--board", "citymeter_picow", "--file", image, "--once")
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/^citymeter: error: no device: no RP2040 drive found/)
    expect(r.stderr).not.toMatch(/internet/)
  })

  test("deploy provisions, builds the target and bundles that very bytecode; no internet is one line", async () => {
    const settings = join(dir, "m1")
    const p = await citymeter(
      "provision",
      "-m",
      "deploy-m1",
      "-b",
      "citymeter_esp32c3",
      "-u",
      "mqtt://10.0.0.1:1883",
      "--open",
      "-o",
      settings,
    )
    expect(p.code, p.stderr).toBe(0)
    const r = await citymeter("deploy", "--board", "citymeter_esp32c3", "--settings", settings)
    expect(r.code).toBe(1)
    expect(r.stdout).toMatch(/\[build\] .*bytecode\.devs: \d+ B \(firmware\/targets\/citymeter_esp32c3\.ts\)/)
    expect(r.stderr.trim().split("\n")).toHaveLength(1)
    expect(r.stderr).toMatch(
      /cannot download the citymeter_esp32c3 runtime image here \(no internet\): pass it with --file/,
    )
  }, 120_000)

  test("deploy with a runtime image: the flashed image holds the build's bytecode byte for byte, then 'no device'", async () => {
    const image = join(dir, "esp32c3.bin")
    writeFileSync(image, Buffer.alloc(0x400000, 0xff)) // an erased 4 MB flash stands in for the runtime image
    const settings = join(dir, "m2")
    const p = await citymeter(
      "provision",
      "-m",
      "deploy-m2",
      "-b",
      "citymeter_esp32c3",
      "-u",
      "mqtt://10.0.0.1:1883",
      "--open",
      "-o",
      settings,
    )
    expect(p.code, p.stderr).toBe(0)
    const r = await citymeter("deploy", "--board", "citymeter_esp32c3", "--settings", settings, "--file", image)
    expect(r.stdout).toMatch(/the image holds the build's bytecode byte for byte/)
    const bundle = readFileSync(join(settings, "build", "bundle-devicescript-esp32c3-esp32c3_bare-0x0.bin"))
    expect(bundle.indexOf(readFileSync(join(settings, "build", "bytecode.devs")))).toBeGreaterThan(0)
    expect(bundle.indexOf(Buffer.from("deploy-m2"))).toBeGreaterThan(0) // its provisioned settings ride along
    expect(r.code).toBe(1)
    expect(r.stderr.trim().split("\n")).toEqual([
      "citymeter: error: no device: no citymeter_esp32c3 board on a serial port; connect it (or pass --port <path>) and retry",
    ])
  }, 120_000)

  test("a build for a board without a citymeter target is refused: it would measure nothing", async () => {
    const r = await citymeter("build", "--board", "esp32c3_bare")
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/board 'esp32c3_bare' has no citymeter target/)
  })
})
