// citymeter bridge entry point: configuration from the environment (README lists the variables).
import { configFromEnv, startService } from "./service.js"

const svc = await startService(configFromEnv())
console.log(
  `citymeter bridge (MODE=${svc.role}): MQTT ${svc.mqttUrl || "none"}, store ${svc.store.engine}, API ${svc.httpUrl}`,
)
for (const sig of ["SIGINT", "SIGTERM"] as const)
  process.once(sig, () => {
    void svc.stop().then(() => process.exit(0))
  })
