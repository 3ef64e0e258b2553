// citymeter bridge entry point: configuration from the environment (README lists the variables).
// Settings that cannot work are named one per line, and the process exits 2 having opened nothing.
import { ServiceConfigError, configFromEnv, startService, type Service } from "./service.js"

let svc: Service
try {
  const config = configFromEnv()
  // fault injection (tests/faults-*.test.ts): the hook is loaded only when asked for
  const killAt = process.env.CITYMETER_FAULT_KILL_IN_BATCH
  if (killAt) config.ingestBeforeCommit = (await import("./ingest/fault-kill.js")).killInBatch(Number(killAt))
  svc = await startService(config)
} catch (e) {
  if (!(e instanceof ServiceConfigError)) throw e
  for (const p of e.problems) console.error(`citymeter bridge: error: ${p}`)
  process.exit(2)
}
console.log(
  `citymeter bridge (MODE=${svc.role}): MQTT ${svc.mqttUrl || "none"}, store ${svc.store.engine}, API ${svc.httpUrl}`,
)
// SIGTERM (a supervisor) or SIGINT: ingest commits and acknowledges the frames it has in hand,
// then everything closes in the reverse order of its opening (Service.stop). A second signal ends
// the process at once (the handlers run once).
let stopping = false
for (const sig of ["SIGINT", "SIGTERM"] as const)
  process.once(sig, () => {
    if (stopping) process.exit(1)
    stopping = true
    svc.stop().then(
      () => process.exit(0),
      (e: unknown) => {
        console.error("stopping failed:", e)
        process.exit(1)
      },
    )
  })
