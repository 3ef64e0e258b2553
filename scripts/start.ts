// The main job on embedded defaults, one process: embedded broker + embedded database + bridge +
// HTTP API + simulated meters running the real firmware. `npm start`; Ctrl-C stops it.
// Environment: METERS (default 3), INTERVAL_S (default 5), BATCH (default 2), HTTP_PORT (8080),
// EMBEDDED_MQTT_PORT (11883), DATABASE_URL (pglite:./data/pglite), MQTT_URL (use a real broker).
import { join } from "node:path"
import { mkdirSync } from "node:fs"
import { configFromEnv, startService } from "../bridge/src/service.js"
import { driveDemo } from "../sim/src/demo.js"
import { SimMeter } from "../sim/src/meter.js"
import { paths } from "../sim/src/paths.js"

const meters = Number(process.env.METERS ?? 3)
const intervalS = Number(process.env.INTERVAL_S ?? 5)
const batch = Number(process.env.BATCH ?? 2)

const svc = await startService({ ...configFromEnv(), demo: true })
const broker = new URL(svc.mqttUrl)
const flashDir = join(paths.root, "data/flash")
mkdirSync(flashDir, { recursive: true })

const sims: SimMeter[] = []
for (let i = 1; i <= meters; i++) {
  const meterId = `demo-${String(i).padStart(3, "0")}`
  const m = new SimMeter({
    meterId,
    flashFile: join(flashDir, `${meterId}.bin`),
    settings: { MQTT_HOST: broker.hostname, MQTT_PORT: Number(broker.port), INTERVAL_S: intervalS, BATCH: batch },
  })
  sims.push(m)
}

const stopDriving = driveDemo(sims)
for (const m of sims) await m.start()

console.log(`
citymeter is running (embedded defaults unless MQTT_URL / DATABASE_URL are set)
  MQTT broker   ${svc.mqttUrl}
  data tier     ${svc.store.engine} (${configFromEnv().databaseUrl})
  HTTP API      ${svc.httpUrl}/meters
  readings      ${svc.httpUrl}/meters/${sims[0].meterId}/readings
  metrics       ${svc.httpUrl}/metrics
  ${meters} simulated meters running the real firmware, ${intervalS}s intervals x${batch} per frame.
Ctrl-C to stop.`)

async function shutdown() {
  stopDriving()
  for (const m of sims) await m.stop()
  await svc.stop()
  process.exit(0)
}
process.once("SIGINT", () => void shutdown())
process.once("SIGTERM", () => void shutdown())
