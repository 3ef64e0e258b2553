// The main job on embedded defaults, one process: embedded broker + embedded database + bridge +
// HTTP API + simulated meters running the real firmware. `npm start`; Ctrl-C stops it, and the
// meters go offline (their Death frames, or marked offline when a Death did not arrive in time).
// Environment: METERS, INTERVAL_S, BATCH (defaults: DEMO_FLEET, sim/src/demo.ts), and the bridge's
// variables (README Configuration; defaults in bridge/src/defaults.ts), MQTT_URL to use a real broker.
// A failure the user can fix (a port in use, a bad setting) is one line; DEBUG=1 adds the stack.
import { join } from "node:path"
import { mkdirSync } from "node:fs"
import { format } from "node:util"
import { configFromEnv, startService, type Service, type ServiceConfig } from "../bridge/src/service.js"
import { createLogger } from "../bridge/src/log.js"
import { reportError } from "../cli/errors.js"
import { DEMO_ALARM_SETTINGS, DEMO_FLEET, DEMO_SPEED_NOTE, driveDemo } from "../sim/src/demo.js"
import { SimMeter } from "../sim/src/meter.js"
import { paths } from "../sim/src/paths.js"

const meters = Number(process.env.METERS ?? DEMO_FLEET.meters)
const intervalS = Number(process.env.INTERVAL_S ?? DEMO_FLEET.intervalS)
const batch = Number(process.env.BATCH ?? DEMO_FLEET.batch)
/** How long a clean stop waits for the meters' Death frames (their MQTT wills) to be stored. */
const DEATH_WAIT_MS = 5000

let svc: Service
let config: ServiceConfig
try {
  config = configFromEnv()
  svc = await startService({ ...config, demo: true })
} catch (e) {
  process.exit(reportError("npm start", e))
}
// the meters' own lines, in the bridge's log form, each with its meter id: the firmware's console
// at info, the runtime's messages at debug, its errors at warn
const firmwareLog = createLogger("firmware", config.logSettings)
const LINE_LEVEL = { console: "info", dmesg: "debug", error: "warn" } as const
// jacdac-ts reports the simulated buses' states with console.debug ("citymeter-vm demo-001:
// connecting"): debug records, so that stdout holds log records only (and the banner)
const simLog = createLogger("sim", config.logSettings)
console.debug = (...args: unknown[]) => simLog.debug(format(...args))
const broker = new URL(svc.mqttUrl)
const flashDir = join(paths.root, "data/flash")
mkdirSync(flashDir, { recursive: true })

const sims: SimMeter[] = []
for (let i = 1; i <= meters; i++) {
  const meterId = `demo-${String(i).padStart(3, "0")}`
  const meterLog = firmwareLog.child({ meterId })
  const m = new SimMeter({
    meterId,
    log: (line, kind) => meterLog[LINE_LEVEL[kind]](line.replace(/^> /, "")),
    water: "register", // the demo runs at 60x: pulses that fast are past the GPIO polling
    flashFile: join(flashDir, `${meterId}.bin`),
    settings: {
      ...DEMO_ALARM_SETTINGS,
      MQTT_HOST: broker.hostname,
      MQTT_PORT: Number(broker.port),
      INTERVAL_S: intervalS,
      BATCH: batch,
    },
  })
  sims.push(m)
}

const stopDriving = driveDemo(sims)
for (const m of sims) await m.start()

const brokerArg = `--broker ${svc.mqttUrl}`
console.log(`
citymeter is running (embedded defaults unless MQTT_URL / DATABASE_URL are set)
  dashboard     ${svc.httpUrl}/
  API docs      ${svc.httpUrl}/docs
  MQTT broker   ${svc.mqttUrl}
  data tier     ${svc.store.engine} (${config.databaseUrl})
  HTTP API      ${svc.httpUrl}/meters
  readings      ${svc.httpUrl}/meters/${sims[0].meterId}/readings
  metrics       ${svc.httpUrl}/metrics
  ${meters} simulated meters running the real firmware, ${intervalS} s intervals x${batch} per frame;
  ${DEMO_SPEED_NOTE} (alarm thresholds in simulated time).
In another terminal:
  npx citymeter watch + ${brokerArg}                    live frames of every meter
  npx citymeter sim ${brokerArg} --prefix mine -n 2     two more simulated meters
Ctrl-C to stop.`)

/** After the VMs stop, the broker publishes each meter's will (its Death); wait until it is stored. */
async function awaitDeaths(): Promise<string[]> {
  const ids = sims.map((m) => m.meterId)
  const online = async () =>
    (await Promise.all(ids.map((id) => svc.store.getMeter(id)))).filter((r) => r?.online).map((r) => r!)
  const until = Date.now() + DEATH_WAIT_MS
  let left = await online()
  while (left.length && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 100))
    left = await online()
  }
  // no Death in time (an external broker that was gone, say): offline explicitly, for that boot
  for (const r of left) if (r.boot !== null) await svc.store.recordDeath(r.meterId, r.boot, new Date())
  return left.map((r) => r.meterId)
}

let stopping = false
async function shutdown() {
  if (stopping) return
  stopping = true
  try {
    stopDriving()
    for (const m of sims) await m.stop()
    const forced = await awaitDeaths()
    console.log(
      forced.length
        ? `stopped: ${sims.length - forced.length} meter(s) offline by their Death frame, ${forced.join(", ")} marked offline`
        : `stopped: ${sims.length} meter(s) offline by their Death frame`,
    )
    await svc.stop()
    process.exit(0)
  } catch (e) {
    process.exit(reportError("npm start", e))
  }
}
process.on("SIGINT", () => void shutdown())
process.on("SIGTERM", () => void shutdown())
