// Every failure a user can cause is one actionable line on stderr with an exit code
// (2 bad input, 1 failed operation), and a stack trace only with --verbose or DEBUG. Each case runs
// the real entry point as a child process: the CLI (cli/bin/citymeter.js) and the demo
// (scripts/start.ts, what `npm start` runs after its build).
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs"
import { createServer, type AddressInfo, type Server } from "node:net"
import { tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { CITYMETER_BIN, startNode, type Run } from "../../testkit/process.js"
import { freePort } from "../../testkit/infra.js"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..")
const tsx = join(root, "node_modules/tsx/dist/cli.mjs")

const run = (argv: string[], env: Record<string, string | undefined> = {}) =>
  startNode(argv, { DEBUG: undefined, MQTT_URL: undefined, CITYMETER_API_TOKEN: "", ...env }).done
const citymeter = (args: string[], env?: Record<string, string | undefined>) => run([CITYMETER_BIN, ...args], env)

/** The error lines of a run: the ones a user reads, without commander's usage hints. */
const errorLines = (r: Run) =>
  r.stderr
    .trim()
    .split("\n")
    .filter((l) => l && !/^\((run with --help|Did you mean)/.test(l))
const STACK = /^\s+at /m

async function listen(port = 0): Promise<Server> {
  const srv = createServer()
  await new Promise<void>((r) => srv.listen(port, "127.0.0.1", r))
  return srv
}
const portOf = (s: Server) => (s.address() as AddressInfo).port

describe("one-line errors, as a user meets them", () => {
  let busy: Server
  let dir: string
  beforeAll(async () => {
    busy = await listen()
    dir = mkdtempSync(join(tmpdir(), "cm-errors-"))
  })
  afterAll(() => new Promise<void>((r) => busy.close(() => r())))

  // issue 20: the settings bank's budget is exact (bridge/src/tunables/storage-budget.ts storageBudget); a Pico W
  // whose settings leave no room for the queue is refused before anything is built
  test("a configuration over the board's settings bank is refused by build, with the reason", async () => {
    const settings = join(dir, "big")
    mkdirSync(settings)
    writeFileSync(
      join(settings, ".env.defaults"),
      `METER_ID=big-1\nBOARD=citymeter_picow\nMQTT_HOST=127.0.0.1\nNOTE=${"x".repeat(200)}\n`,
    )
    const r = await citymeter(["build", "-b", "citymeter_picow", "--settings", settings])
    expect(r.code).toBe(2)
    expect(errorLines(r)).toEqual([
      expect.stringMatching(
        /^citymeter: error: the flash queue \(26 slots x 232 B = 6032 B\).* over the 8144 B usable of the 8192 B settings bank of citymeter_picow.*at most 25 fit/,
      ),
    ])
    expect(existsSync(join(settings, "build"))).toBe(false)
  })

  test("a bad flag, a bad id and a missing file: one line each, exit code 2, nothing written", async () => {
    const [flag, id, dot, file, settings, board] = await Promise.all([
      citymeter(["build", "--bord", "x"]),
      citymeter(["provision", "-m", "..", "-b", "sim", "-u", "mqtt://127.0.0.1:1883", "-o", join(dir, "p1")]),
      citymeter(["provision", "-m", ".", "-b", "sim", "-u", "mqtt://127.0.0.1:1883"]),
      citymeter(["decode", join(dir, "missing.hex")]),
      citymeter(["build", "-b", "sim", "--settings", join(dir, "none")]),
      citymeter(["provision", "-m", "hall-7.w1", "-b", "simx", "-u", "mqtt://127.0.0.1:1883", "-o", join(dir, "p2")]),
    ])
    // the unknown option by name, not a missing --board
    expect(errorLines(flag)).toEqual(["citymeter: error: unknown option '--bord'"])
    expect(flag.stderr).toContain("(Did you mean --board?)")
    expect(errorLines(id)).toEqual([expect.stringMatching(/^citymeter: error: meter id '\.\.' is not valid: 1-64 of/)])
    expect(errorLines(dot)).toEqual([expect.stringMatching(/^citymeter: error: meter id '\.' is not valid/)])
    expect(existsSync(join(dir, "p1"))).toBe(false)
    expect(errorLines(file)).toEqual([`citymeter: error: no such file: ${join(dir, "missing.hex")}`])
    expect(errorLines(settings)).toEqual([
      `citymeter: error: ${join(dir, "none", ".env.defaults")} not found: run \`citymeter provision --out ${join(dir, "none")}\` first`,
    ])
    // the repository's meter boards first, DeviceScript's generic ones after
    expect(errorLines(board)).toEqual([
      expect.stringMatching(
        /^citymeter: error: unknown board 'simx': citymeter boards: citymeter_esp32c3, citymeter_esp32s3, citymeter_picow; simulator: sim \(DeviceScript's generic boards also work: /,
      ),
    ])
    for (const r of [flag, id, dot, file, settings, board]) {
      expect(r.code).toBe(2)
      expect(r.stderr).not.toMatch(STACK)
    }
  })

  test("a missing service: the broker that was tried is named; exit code 1", async () => {
    const closed = await freePort()
    const [given, defaulted] = await Promise.all([
      citymeter(["watch", "+", "-u", `mqtt://127.0.0.1:${closed}`]),
      // no --broker, no MQTT_URL, no demo broker: the CLI says which broker it uses and why
      citymeter(["watch", "+", "-t", "1"], { EMBEDDED_MQTT_PORT: String(closed) }),
    ])
    expect(given.code).toBe(1)
    expect(errorLines(given)).toEqual([
      expect.stringMatching(new RegExp(`^citymeter: error: cannot connect to mqtt://127\\.0\\.0\\.1:${closed}`)),
    ])
    expect(defaulted.code).toBe(1)
    expect(errorLines(defaulted)).toEqual([
      `citymeter: broker mqtt://127.0.0.1:1883 (no demo broker on mqtt://127.0.0.1:${closed}; --broker to choose another)`,
      "citymeter: error: no frame on citymeter/v1/+/# within 1 s",
    ])
  })

  test("the demo refuses a flag it does not know, naming the ones it takes, before it starts anything", async () => {
    const r = await run([tsx, "scripts/start.ts", "--opne"], { HTTP_PORT: String(portOf(busy)) })
    expect(r.code).toBe(2)
    expect(errorLines(r)).toEqual([
      expect.stringMatching(/^npm start: error: Unknown option '--opne'.*--open .*--anonymous-broker/),
    ])
  })

  test("a port in use: citymeter bridge and the demo name HTTP_PORT in one line; the stack only on request", async () => {
    const taken = portOf(busy)
    const bridgeArgs = ["bridge", "--demo", "--database-url", "pglite:memory", "--http-port", String(taken)]
    const env = { EMBEDDED_MQTT_PORT: String(await freePort()) }
    const demoEnv = {
      HTTP_PORT: String(taken),
      EMBEDDED_MQTT_PORT: String(await freePort()),
      DATABASE_URL: "pglite:memory",
    }
    const [bridge, verbose, demo] = await Promise.all([
      citymeter(bridgeArgs, env),
      citymeter([...bridgeArgs, "--verbose"], { EMBEDDED_MQTT_PORT: String(await freePort()) }),
      run([tsx, "scripts/start.ts"], demoEnv),
    ])
    const inUse = `port ${taken} is already in use`
    expect(bridge.code).toBe(1)
    expect(errorLines(bridge)).toEqual([expect.stringContaining(`citymeter: error: ${inUse}`)])
    expect(errorLines(bridge)[0]).toContain("HTTP_PORT")
    expect(verbose.code).toBe(1)
    expect(verbose.stderr).toContain(inUse)
    expect(verbose.stderr).toMatch(STACK)
    expect(demo.code).toBe(1)
    expect(errorLines(demo)).toEqual([expect.stringContaining(`npm start: error: ${inUse}`)])
    expect(errorLines(demo)[0]).toContain("HTTP_PORT")
  })

  test("decode: a boot with no body, or a downlink, is no valid uplink (exit code 1, the bridge's reason)", async () => {
    const [bare, downlink] = await Promise.all([
      citymeter(["decode", "0801"]),
      citymeter(["decode", "proto/golden/down-ack.hex"]),
    ])
    expect(bare.code).toBe(1)
    expect(bare.stderr).toContain("the bridge would reject this frame on up/death: CM_ERR_KIND_MISMATCH")
    expect(bare.stdout).not.toContain("bridge's view")
    expect(downlink.code).toBe(1)
    expect(downlink.stderr).toMatch(/the bridge would reject this frame on up\/\w+: CM_ERR_/)
  })

  test("a setting that cannot work is one line too; DEBUG adds the stack", async () => {
    const [r, debug] = await Promise.all([
      citymeter(["bridge"], { CITYMETER_MODE: "staging" }),
      citymeter(["bridge"], { CITYMETER_MODE: "staging", DEBUG: "1" }),
    ])
    const line = "citymeter: error: CITYMETER_MODE must be demo or production (got 'staging')"
    // settings that cannot work exit 2, as a usage error does (issue 26)
    expect(r.code).toBe(2)
    expect(errorLines(r)).toEqual([line])
    expect(debug.code).toBe(2)
    expect(debug.stderr.split("\n")[0]).toBe(line)
    expect(debug.stderr).toMatch(STACK)
  })
})
