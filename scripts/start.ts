// The main job on embedded defaults, one process: embedded broker + embedded database + bridge +
// HTTP API + simulated meters running the real firmware (scripts/demo.ts). `npm start`; Ctrl-C
// stops it, and the meters go offline (their Death frames, or marked offline when a Death did not
// arrive in time). The meters seal their frames and the broker takes only the logins made at start
// (written to data/broker/logins.json); `npm start -- --open` sends open frames as before, and
// `--anonymous-broker` lets anyone on the broker.
// The meters are a small city by default (issue 25 item 6; sim/scenarios/city.ts demoCity): two
// DMAs, each an inflow meter and three customers, with a pipe leak, a customer-side leak, a stuck
// meter and a bypass; METERS=n runs n households instead, as before.
// Environment: METERS, INTERVAL_S, BATCH (defaults: DEMO_FLEET, sim/src/demo.ts), and the bridge's
// variables (README Configuration; defaults in bridge/src/defaults.ts), MQTT_URL to use a real broker.
// A failure the user can fix (a port in use, a bad setting, a bad flag) is one line; DEBUG=1 adds the stack.
import { relative } from "node:path"
import { format, parseArgs } from "node:util"
import { createLogger } from "../bridge/src/log.js"
import { configFromEnv, type ServiceConfig } from "../bridge/src/service.js"
import { reportError, usage } from "../cli/errors.js"
import { DEMO_FLEET, DEMO_SPEED_NOTE } from "../sim/src/demo.js"
import { DEMO_DATA_DIR } from "../sim/src/demo-logins.js"
import { startDemo, type Demo } from "./demo.js"

const FLAGS = {
  open: { type: "boolean", default: false },
  "anonymous-broker": { type: "boolean", default: false },
} as const
const FLAGS_HELP = "--open (meters send open frames), --anonymous-broker (the embedded broker takes anyone)"

const fleet = {
  city: process.env.METERS === undefined,
  meters: Number(process.env.METERS ?? DEMO_FLEET.meters),
  intervalS: Number(process.env.INTERVAL_S ?? DEMO_FLEET.intervalS),
  batch: Number(process.env.BATCH ?? DEMO_FLEET.batch),
}
// the meters' own lines, in the bridge's log form, each with its meter id: the firmware's console
// at info, the runtime's messages at debug, its errors at warn; held until the banner is out, so
// that a newcomer sees the dashboard's address first
let held: (() => void)[] | undefined = []
const LINE_LEVEL = { console: "info", dmesg: "debug", error: "warn" } as const
let demo: Demo
let config: ServiceConfig
let flags: { open: boolean; "anonymous-broker": boolean }
try {
  try {
    flags = parseArgs({ options: FLAGS, strict: true }).values
  } catch (e) {
    throw usage(`${(e as Error).message}; npm start takes ${FLAGS_HELP}`)
  }
  config = configFromEnv()
  const firmwareLog = createLogger("firmware", config.logSettings)
  // jacdac-ts reports the simulated buses' states with console.debug ("citymeter-vm demo-001:
  // connecting"): debug records, so that stdout holds log records only (and the banner)
  const simLog = createLogger("sim", config.logSettings)
  console.debug = (...args: unknown[]) => simLog.debug(format(...args))
  const meterLogs = new Map<string, typeof firmwareLog>()
  const meterLog = (meterId: string) =>
    meterLogs.get(meterId) ?? meterLogs.set(meterId, firmwareLog.child({ meterId })).get(meterId)!
  demo = await startDemo({
    config,
    meterLog: (meterId, line, kind) => {
      const write = () => meterLog(meterId)[LINE_LEVEL[kind]](line.replace(/^> /, ""))
      if (held) held.push(write)
      else write()
    },
    ...fleet,
    dataDir: DEMO_DATA_DIR,
    open: flags.open,
    anonymousBroker: flags["anonymous-broker"],
  })
} catch (e) {
  process.exit(reportError("npm start", e))
}

const { svc, meters, logins } = demo
const shown = (file: string) => relative(process.cwd(), file) || file
const brokerArg = `--broker ${svc.mqttUrl}`
const access = logins
  ? `logins required (the production ACL), written to ${shown(logins.loginsFile)} (mode 0600)`
  : process.env.MQTT_URL
    ? "yours (MQTT_URL)"
    : "ANONYMOUS (--anonymous-broker): anyone may publish and subscribe"
const frames = flags.open
  ? "open frames (--open: anyone on the broker can read and forge them)"
  : "sealed frames (AES-256-CCM, a key per meter in the registry)"
const more = logins
  ? `  (more simulated meters need a broker that takes them: npm start -- --anonymous-broker, then citymeter sim)`
  : `  npx citymeter sim ${brokerArg} --prefix mine -n 2     two more simulated meters`
console.log(`
citymeter is running (embedded defaults unless MQTT_URL / DATABASE_URL are set)
  dashboard     ${svc.httpUrl}/
  API docs      ${svc.httpUrl}/docs
  MQTT broker   ${svc.mqttUrl}, ${access}
  data tier     ${svc.store.engine} (${config.databaseUrl})
  HTTP API      ${svc.httpUrl}/meters
  readings      ${svc.httpUrl}/meters/${meters[0].meterId}/readings
  metrics       ${svc.httpUrl}/metrics
  ${meters.length} simulated meters running the real firmware, ${frames},${
    fleet.city
      ? `
  a small city: DMAs city-north (a pipe leak from 2 simulated hours, a customer-side leak) and city-south
  (a stuck meter from 1 simulated hour, a bypass): ${svc.httpUrl}/dmas, ${svc.httpUrl}/balances?bucket=hour&from=...&to=...,`
      : ""
  }
  ${fleet.intervalS} s intervals x${fleet.batch} per frame; ${DEMO_SPEED_NOTE} (alarm thresholds in simulated time).
In another terminal:
  npx citymeter watch + ${brokerArg}                    live frames of every meter${logins ? " (as the bridge's login)" : ""}
${more}
Ctrl-C to stop.`)
for (const write of held ?? []) write()
held = undefined

let stopping = false
async function shutdown() {
  if (stopping) return
  stopping = true
  try {
    const forced = await demo.stop()
    console.log(
      forced.length
        ? `stopped: ${meters.length - forced.length} meter(s) offline by their Death frame, ${forced.join(", ")} marked offline`
        : `stopped: ${meters.length} meter(s) offline by their Death frame`,
    )
    process.exit(0)
  } catch (e) {
    process.exit(reportError("npm start", e))
  }
}
process.on("SIGINT", () => void shutdown())
process.on("SIGTERM", () => void shutdown())
