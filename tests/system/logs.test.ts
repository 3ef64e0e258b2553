// Issue 26 item 5, as an operator meets the logs: the bridge's on a pipe are JSON lines at
// LOG_LEVEL; the demo's in a terminal (util-linux `script` gives the process a pseudo-terminal)
// are readable lines, the simulated meters' own lines among them, each tagged with its meter id.
import { spawn } from "node:child_process"
import { expect, test } from "vitest"
import { paths } from "../../sim/src/paths.js"
import { startNode } from "../../testkit/process.js"

const BRIDGE = ["--import", "tsx", "bridge/src/main.ts"]
/** A demo-mode bridge on free ports and an in-memory data tier. */
const ENV = { CITYMETER_MODE: "demo", DATABASE_URL: "pglite:memory", HTTP_PORT: "0", EMBEDDED_MQTT_PORT: "0" }
const STARTED = /citymeter bridge \(MODE=all\)/

/** Runs the bridge until it says it started, then stops it (SIGTERM): what it printed. */
async function bridgeOutput(env: Record<string, string>) {
  const run = startNode(BRIDGE, { ...ENV, LOG_FORMAT: undefined, ...env })
  const until = Date.now() + 100_000
  while (!STARTED.test(run.out.stdout) && run.out.code === null && Date.now() < until)
    await new Promise((r) => setTimeout(r, 100))
  run.proc.kill("SIGTERM")
  const r = await run.done
  expect(r.stdout, r.stderr).toMatch(STARTED)
  return r
}

/** The stdout lines that are log records (not the start banner console.log prints). */
const records = (stdout: string) =>
  stdout
    .split("\n")
    .filter((l) => l && !STARTED.test(l))
    .map((l) => JSON.parse(l) as { level: number; msg: string; name: string })

test("on a pipe the bridge logs JSON lines; LOG_LEVEL=warn keeps only warnings and worse", async () => {
  const [all, warn] = await Promise.all([bridgeOutput({ LOG_LEVEL: "info" }), bridgeOutput({ LOG_LEVEL: "warn" })])
  const info = records(all.stdout)
  expect(info.find((r) => r.msg === "bridge connected")).toMatchObject({ level: 30, name: "citymeter-bridge" })
  expect(info.some((r) => r.level === 40 && r.msg.startsWith("demo mode:"))).toBe(true)
  const warned = records(warn.stdout)
  expect(warned.some((r) => r.level === 40 && r.msg.startsWith("demo mode:"))).toBe(true)
  expect(warned.filter((r) => r.level < 40)).toEqual([])
}, 150_000)

test("a LOG_LEVEL that is no level: one line naming the levels, exit 2", async () => {
  const r = await startNode(BRIDGE, { ...ENV, LOG_LEVEL: "verbose" }).done
  expect(r.code, r.stderr).toBe(2)
  expect(r.stderr.trim()).toBe(
    "citymeter bridge: error: LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent (got 'verbose')",
  )
}, 120_000)

test("the demo in a terminal: readable lines, and each meter's own lines tagged with its id", async () => {
  const env = { ...process.env, ...ENV, METERS: "2", LOG_LEVEL: "info", LOG_FORMAT: "", NO_COLOR: "1" }
  // script(1) runs the demo on a pseudo-terminal and copies what it prints to our pipe
  const proc = spawn("script", ["-qec", "exec node --import tsx scripts/start.ts", "/dev/null"], {
    cwd: paths.root,
    env,
    stdio: ["pipe", "pipe", "pipe"],
  })
  let out = ""
  proc.stdout.on("data", (b: Buffer) => (out += b.toString()))
  const exited = new Promise((r) => proc.on("close", r))
  const tagged = (id: string) =>
    new RegExp(`^\\d\\d:\\d\\d:\\d\\d\\.\\d{3} INFO {2}firmware \\[${id}\\] citymeter: connected\\r?$`, "m")
  // the bridge's records are readable lines too, with the meter id in the same place
  const birth = /^\d\d:\d\d:\d\d\.\d{3} INFO {2}citymeter-bridge \[demo-00[12]\] meter birth boot=\d+/m
  const until = Date.now() + 100_000
  while (![tagged("demo-001"), tagged("demo-002"), birth].every((re) => re.test(out)) && Date.now() < until)
    await new Promise((r) => setTimeout(r, 200))
  proc.kill("SIGTERM")
  await exited
  expect(out).toMatch(tagged("demo-001"))
  expect(out).toMatch(tagged("demo-002"))
  expect(out).toMatch(birth)
  expect(out).not.toMatch(/^\{"level"/m)
  // jacdac-ts's bus states are debug records now, not raw lines at every level
  expect(out).not.toContain("citymeter-vm")
}, 150_000)
