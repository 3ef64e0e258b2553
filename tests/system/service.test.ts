// Issue 26 item 2: deploy/systemd/citymeter-bridge.service. systemd is not PID 1 here, so the unit
// is checked as systemd reads it (`systemd-analyze verify`, `systemd-analyze security --offline`),
// and its command is run as the unit would run it: as a user of its own (nobody: setpriv), on an
// install it cannot write (testkit/install.ts), with its state in a directory of its own.
import { execFileSync, spawnSync } from "node:child_process"
import { chmodSync, chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs"
import { writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import mqtt from "mqtt"
import { afterAll, beforeAll, expect, test } from "vitest"
import { BRIDGE_DEFAULTS } from "../../bridge/src/defaults.js"
import { upTopic } from "../../bridge/src/topics.js"
import { ensureDist } from "../../scripts/build-dist.js"
import { readingsFrame } from "../../testkit/frames.js"
import {
  SERVICE_UID,
  asServiceUser,
  removeInstall,
  stageInstall,
  startInstalled,
  type Installed,
} from "../../testkit/install.js"
import { paths } from "../../sim/src/paths.js"
import { waitFor } from "../helpers.js"

const UNIT = readFileSync(join(paths.root, "deploy/systemd/citymeter-bridge.service"), "utf8")

/** The [Service] section's settings, each key with its values in order (a key may repeat). */
function serviceSettings(unit: string): Map<string, string[]> {
  const out = new Map<string, string[]>()
  let section = ""
  for (const raw of unit.split("\n")) {
    const line = raw.trim()
    if (!line || line.startsWith("#")) continue
    if (line.startsWith("[")) section = line
    else if (section === "[Service]") {
      const i = line.indexOf("=")
      out.set(line.slice(0, i), [...(out.get(line.slice(0, i)) ?? []), line.slice(i + 1)])
    }
  }
  return out
}
const S = serviceSettings(UNIT)
const one = (key: string) => S.get(key)?.at(-1)

let install: string
let work: string
const running: Installed[] = []

beforeAll(async () => {
  await ensureDist()
  install = stageInstall()
  work = mkdtempSync(join(tmpdir(), "cm-service-"))
  chmodSync(work, 0o755) // the service's user reaches its state directory and password file in here
}, 120_000)

afterAll(() => {
  for (const r of running) if (r.proc.exitCode === null && r.proc.signalCode === null) r.proc.kill("SIGKILL")
  if (install) removeInstall(install)
  if (work) rmSync(work, { recursive: true, force: true })
})

/** The unit with its paths moved: node → this Node, /opt/citymeter → the staged install, state → `state`. */
const rewritten = (state = "/var/lib/citymeter") =>
  UNIT.replaceAll("/usr/bin/node", process.execPath)
    .replaceAll("/opt/citymeter", install)
    .replaceAll("/var/lib/citymeter", state)

const analyze = (file: string, ...args: string[]) => {
  const r = spawnSync("systemd-analyze", [...args, file], { encoding: "utf8" })
  return { code: r.status, out: `${r.stdout}${r.stderr}`.trim() }
}

test("the unit is hardened and passes systemd-analyze verify without a warning", () => {
  // its own user, read-only code, a state directory, environment from a file, restarts
  expect(one("User")).toBe("citymeter")
  expect(one("StateDirectory")).toBe("citymeter")
  expect(one("EnvironmentFile")).toBe("/etc/citymeter/bridge.env")
  expect(one("Restart")).toBe("on-failure")
  expect(one("RestartPreventExitStatus")).toBe("2") // a bad setting: config-errors.test.ts
  expect(one("ReadOnlyPaths")).toBe("/opt/citymeter")
  for (const [key, value] of Object.entries({
    ProtectSystem: "strict",
    ProtectHome: "yes",
    PrivateTmp: "yes",
    PrivateDevices: "yes",
    NoNewPrivileges: "yes",
    CapabilityBoundingSet: "",
    ProtectKernelTunables: "yes",
    ProtectControlGroups: "yes",
    RestrictSUIDSGID: "yes",
    RestrictNamespaces: "yes",
    LockPersonality: "yes",
  }))
    expect(one(key), key).toBe(value)
  expect(one("RestrictAddressFamilies")).toBe("AF_INET AF_INET6 AF_UNIX")
  // plain Node on the compiled main, source maps on
  expect(one("ExecStart")).toBe("/usr/bin/node --enable-source-maps /opt/citymeter/dist/bridge/src/main.js")
  // SIGTERM, and time to drain ingest (bridge/src/defaults.ts) and close the rest before SIGKILL
  expect(one("KillSignal")).toBe("SIGTERM")
  const stopS = Number(one("TimeoutStopSec"))
  expect(stopS * 1000).toBeGreaterThanOrEqual(BRIDGE_DEFAULTS.drainMs + 10_000)
  expect(stopS).toBeLessThanOrEqual(90) // systemd's default; past it a stuck stop holds up a shutdown

  // as shipped (verify checks that ExecStart's program exists: /usr/bin/node), then with its paths
  // on this checkout's staged install, where the compiled main is
  const shipped = join(work, "shipped", "citymeter-bridge.service")
  const here = join(work, "here", "citymeter-bridge.service")
  for (const [file, text] of [
    [shipped, UNIT],
    [here, rewritten()],
  ] as const) {
    execFileSync("mkdir", ["-p", join(file, "..")])
    writeFileSync(file, text)
    expect(analyze(file, "verify", "--man=no")).toEqual({ code: 0, out: "" })
  }
  expect(existsSync(join(install, "dist/bridge/src/main.js"))).toBe(true)
  // the check can fail: a misspelt setting is reported
  const typo = join(work, "typo", "citymeter-bridge.service")
  execFileSync("mkdir", ["-p", join(typo, "..")])
  writeFileSync(typo, UNIT.replace("ProtectHome=yes", "ProtectHom=yes"))
  expect(analyze(typo, "verify", "--man=no").out).toMatch(/Unknown key 'ProtectHom'/)

  // systemd's own reading of the sandbox: 0 (locked down) to 10 (exposed); 1.6 when written
  const security = analyze(shipped, "security", "--offline=yes", "--no-pager")
  const exposure = /Overall exposure level for citymeter-bridge\.service: ([\d.]+)/.exec(security.out)
  expect(exposure, security.out).not.toBeNull()
  expect(Number(exposure![1])).toBeLessThanOrEqual(2)
})

test("the unit's command runs as a user of its own on a read-only install: ingests, answers /healthz, SIGTERM exits 0", async () => {
  const state = join(work, "state")
  execFileSync("mkdir", ["-p", state])
  chownSync(state, SERVICE_UID, SERVICE_UID)
  chmodSync(state, 0o750) // StateDirectoryMode
  // the settings an operator puts in /etc/citymeter/bridge.env, and the broker's password file
  const passwd = join(work, "mqtt-passwd")
  execFileSync("mosquitto_passwd", ["-c", "-b", passwd, "citymeter-bridge", "bridge-pw"])
  execFileSync("mosquitto_passwd", ["-b", passwd, "svc-001", "meter-pw"])
  chmodSync(passwd, 0o644)
  const settings = {
    HTTP_PORT: "0",
    EMBEDDED_MQTT_PORT: "0",
    EMBEDDED_MQTT_PASSWORD_FILE: passwd,
    MQTT_USERNAME: "citymeter-bridge",
    MQTT_PASSWORD: "bridge-pw",
    API_TOKEN: "service-test-token",
    LOG_LEVEL: "warn",
  }
  const unit = serviceSettings(rewritten(state))
  const env = Object.fromEntries((unit.get("Environment") ?? []).map((e) => e.split(/=(.*)/s).slice(0, 2)))
  expect(env.DATABASE_URL).toBe(`pglite:${state}/pglite`)
  const [node, ...argv] = unit.get("ExecStart")![0].split(" ")
  expect(node).toBe(process.execPath)

  const bridge = await startInstalled(argv, { ...env, ...settings }, unit.get("WorkingDirectory")![0])
  running.push(bridge)
  const uids = /^Uid:\s+(.*)$/m.exec(readFileSync(`/proc/${bridge.proc.pid}/status`, "utf8"))![1].split(/\s+/)
  expect(uids).toEqual(Array(4).fill(String(SERVICE_UID)))
  if (process.getuid?.() === 0) expect(SERVICE_UID).not.toBe(0)
  // the code is read-only to it
  const [touch, ...args] = asServiceUser(["touch", join(install, "dist/bridge/src/x")])
  const write = spawnSync(touch, args, { encoding: "utf8" })
  expect(write.status).not.toBe(0)
  expect(write.stderr).toMatch(/Permission denied/)
  expect(statSync(join(install, "dist")).mode & 0o222).toBe(0)

  const api = bridge.apiUrl!
  const auth = { authorization: "Bearer service-test-token" }
  expect((await fetch(`${api}/healthz`)).status).toBe(200)
  const put = await fetch(`${api}/meters/svc-001`, {
    method: "PUT",
    headers: { ...auth, "content-type": "application/json" },
    body: JSON.stringify({ policy: "open" }),
  })
  expect(put.status).toBe(201)
  const mqttUrl = /MQTT (mqtt:\/\/\S+),/.exec(bridge.output.join(""))![1]
  const meter = await mqtt.connectAsync(mqttUrl, { clientId: "svc-001", username: "svc-001", password: "meter-pw" })
  const startS = Math.floor(Date.now() / 1000) - 240
  await meter.publishAsync(upTopic("svc-001", "readings"), readingsFrame({ seq: 1, startS, totalMl: 40 }), { qos: 1 })
  await meter.endAsync()
  const readings = await waitFor(
    "the frame's reading through the API",
    async () => {
      const res = await fetch(`${api}/meters/svc-001/readings`, { headers: auth })
      const page = (await res.json()) as { readings: { waterTotalMl?: number }[] }
      return page.readings.length ? page.readings : undefined
    },
    20_000,
  )
  expect(readings).toHaveLength(1)
  // what it wrote is in its state directory, owned by it
  const data = join(state, "pglite")
  expect(statSync(data).uid).toBe(SERVICE_UID)
  expect(readdirSync(data).length).toBeGreaterThan(0)

  bridge.proc.kill("SIGTERM")
  expect(await bridge.exited).toEqual({ code: 0, signal: null })
})
