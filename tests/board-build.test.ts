// One bytecode (issue 11): `citymeter build --board B` (the CLI process) compiles the board's
// target; the simulator runs that very file against the broker; the bridge stores its readings.
// On a board the drivers serve the sensor roles; in the VM there are no pins, and the simulated
// Jacdac sensors do.
import { spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { sha256 } from "../cli/firmware.js"
import { SimMeter, parseEnvSettings } from "../sim/src/meter.js"
import { paths } from "../sim/src/paths.js"
import { startStack, uid, waitFor, type ApiReading, type TestStack } from "./helpers.js"

const BOARDS = ["citymeter_esp32c3", "citymeter_esp32s3", "citymeter_picow"]

function citymeter(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [join(paths.root, "cli/bin/citymeter.js"), ...args], { cwd: paths.root })
    let stdout = ""
    let stderr = ""
    p.stdout.on("data", (b) => (stdout += b))
    p.stderr.on("data", (b) => (stderr += b))
    p.on("close", (code) => resolve({ code: code ?? 1, stdout, stderr }))
  })
}

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
      const meter = new SimMeter({ meterId, bytecodeFile: file, settings: built })
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
          const res = await stack.app.inject({ url: `/meters/${meterId}/readings` })
          const r = res.statusCode === 200 ? (res.json().readings as ApiReading[]) : []
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
