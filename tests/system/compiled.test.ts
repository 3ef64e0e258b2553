// Issue 26 item 1: the bridge and the CLI run as compiled JavaScript (`npm run build` → dist/) on
// plain Node, with source maps. Each test runs an install staged from this checkout
// (testkit/install.ts: dist/ and the production dependencies, in a folder of its own), so tsx and
// TypeScript are not on the process's resolution path at all: a compiled module that still needed
// them would fail to load.
import { execFileSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { ensureDist } from "../../scripts/build-dist.js"
import { SERVICE_UID, removeInstall, stageInstall, startInstalled, type Installed } from "../../testkit/install.js"
import { paths } from "../../sim/src/paths.js"
import { PG_URL, dropSchema } from "../helpers.js"

let install: string
let state: string
const schema = `t_compiled_${randomBytes(4).toString("hex")}`
const running: Installed[] = []

beforeAll(async () => {
  await ensureDist()
  install = stageInstall()
  state = mkdtempSync(join(tmpdir(), "cm-compiled-state-"))
  chownSync(state, SERVICE_UID, SERVICE_UID)
  execFileSync("mosquitto_passwd", ["-c", "-b", join(state, "passwd"), "citymeter-bridge", "bridge-pw"])
}, 120_000)

afterAll(async () => {
  for (const r of running) if (r.proc.exitCode === null && r.proc.signalCode === null) r.proc.kill("SIGKILL")
  if (install) removeInstall(install)
  if (state) rmSync(state, { recursive: true, force: true })
  await dropSchema(schema)
})

/**
 * A production configuration: embedded broker with logins, any free ports, PostgreSQL (a schema of
 * this file's: quicker to open than the embedded engine, which service.test.ts runs).
 */
const env = (more: Record<string, string> = {}) => ({
  DATABASE_URL: PG_URL,
  DATABASE_SCHEMA: schema,
  HTTP_PORT: "0",
  EMBEDDED_MQTT_PORT: "0",
  EMBEDDED_MQTT_PASSWORD_FILE: join(state, "passwd"),
  MQTT_USERNAME: "citymeter-bridge",
  MQTT_PASSWORD: "bridge-pw",
  LOG_LEVEL: "warn",
  ...more,
})

const start = async (argv: string[]) => {
  const r = await startInstalled(argv, env(), state)
  running.push(r)
  return r
}

const stopped = async (r: Installed) => {
  r.proc.kill("SIGTERM")
  return r.exited
}

describe("the compiled bridge", () => {
  test("runs on plain Node with no tsx or TypeScript to load; serves /healthz, the dashboard and its version", async () => {
    for (let dir = install; dir !== dirname(dir); dir = dirname(dir))
      for (const pkg of ["tsx", "typescript"]) expect(existsSync(join(dir, "node_modules", pkg)), dir).toBe(false)
    const bridge = await start(["--enable-source-maps", join(install, "dist/bridge/src/main.js")])
    const argv = readFileSync(`/proc/${bridge.proc.pid}/cmdline`, "utf8").split("\0")
    expect(argv.join(" ")).not.toMatch(/tsx|\.ts\b/)
    expect(argv).toContain(join(install, "dist/bridge/src/main.js"))

    const health = await fetch(`${bridge.apiUrl}/healthz`)
    expect(health.status).toBe(200)
    expect(await health.json()).toEqual({ ok: true })
    // the dashboard and its assets come from dist/web/dist; the version from dist/package.json
    const page = await (await fetch(`${bridge.apiUrl}/`)).text()
    const script = /<script type="module" src="([^"]+)"/.exec(page)?.[1]
    expect(script, page).toBeDefined()
    expect((await fetch(`${bridge.apiUrl}/${script}`)).status).toBe(200)
    const pkg = JSON.parse(readFileSync(join(paths.root, "package.json"), "utf8")) as { version: string }
    const api = (await (await fetch(`${bridge.apiUrl}/openapi.json`)).json()) as { info: { version: string } }
    expect(api.info.version).toBe(pkg.version)

    expect(await stopped(bridge)).toEqual({ code: 0, signal: null })
  })

  test("a stack trace names the TypeScript source's file and line", async () => {
    // a password file that is not there: read when the embedded broker starts, and thrown from there
    const source = readFileSync(join(paths.root, "bridge/src/acl.ts"), "utf8").split("\n")
    const line = source.findIndex((l) => l.includes("readFileSync(path")) + 1
    expect(line).toBeGreaterThan(0)
    const failed = await startInstalled(
      ["--enable-source-maps", join(install, "dist/bridge/src/main.js")],
      env({ EMBEDDED_MQTT_PASSWORD_FILE: join(state, "missing-passwd") }),
      state,
    ).then(
      (r) => void running.push(r),
      (e: Error) => e,
    )
    expect(failed?.message).toMatch(/^exited 1:/)
    const out = failed!.message
    expect(out).toMatch(new RegExp(`at readPasswordFile \\(\\S*/bridge/src/acl\\.ts:${line}:\\d+\\)`))
    expect(out).toMatch(/at startEmbeddedBroker \(\S*\/bridge\/src\/broker\.ts:\d+:\d+\)/)
    expect(out).not.toMatch(/dist\/bridge\/src\/\S+\.js:\d+/)
  })
})

describe("the compiled CLI", () => {
  test("`citymeter bridge` runs dist/cli/main.js through the bin, without tsx; SIGTERM exits 0", async () => {
    const bin = join(install, "cli/bin/citymeter.js")
    const bridge = await start([bin, "bridge"])
    expect(bridge.output.join("")).toMatch(/^starting the bridge: store postgres:\/\//m)
    expect((await fetch(`${bridge.apiUrl}/healthz`)).status).toBe(200)
    expect(await stopped(bridge)).toEqual({ code: 0, signal: null })
  })
})
