// `citymeter sim` and `citymeter bridge`: run those parts in this process.
import { existsSync } from "node:fs"
import { configFromEnv, startService, type ServiceConfig } from "../bridge/src/service.js"
import { METER_ID_PATTERN } from "../bridge/src/topics.js"
import { TUNABLE_BY_NAME } from "../bridge/src/tunables/schema.js"
import { DEMO_ALARM_SETTINGS, DEMO_SPEED_NOTE } from "../sim/src/demo.js"
import { readDemoLogins } from "../sim/src/demo-logins.js"
import { paths } from "../sim/src/paths.js"
import { FORWARD_LINES, SimPool } from "../sim/src/workers.js"
import { CliError, usage } from "./errors.js"
import type { Print } from "./build.js"

export interface SimOptions {
  broker: string
  meters: number
  prefix: string
  interval: number
  batch: number
  username?: string
  password?: string
  /** Seconds; 0 runs until Ctrl-C. */
  duration: number
  verbose?: boolean
  /** Worker threads the meters are spread over (default: one per core). */
  workers?: number
}

function int(name: string, v: number, min: number, max: number) {
  if (!Number.isInteger(v) || v < min || v > max) throw usage(`${name} must be an integer in ${min}..${max} (got ${v})`)
  return v
}

const stopSignal = () =>
  new Promise<void>((r) => {
    process.once("SIGINT", () => r())
    process.once("SIGTERM", () => r())
  })

/** N meters running the real firmware bytecode, each with a household-like demand pattern. */
export async function sim(o: SimOptions, print: Print): Promise<Map<string, number>> {
  int("--meters", o.meters, 1, 2000)
  // the meters' settings: bounds from proto/tunables.json
  int("--interval", o.interval, TUNABLE_BY_NAME.intervalS.min, TUNABLE_BY_NAME.intervalS.max)
  int("--batch", o.batch, TUNABLE_BY_NAME.batch.min, TUNABLE_BY_NAME.batch.max)
  if (o.workers !== undefined) int("--workers", o.workers, 1, 64)
  const url = (() => {
    try {
      return new URL(o.broker)
    } catch {
      throw usage(`broker URL '${o.broker}' is not a URL`)
    }
  })()
  if (url.protocol !== "mqtt:" && url.protocol !== "mqtts:") throw usage("broker URL must be mqtt:// or mqtts://")
  // the sealed demo's broker takes only its own meters' logins: say so instead of retrying forever
  if (o.username === undefined && readDemoLogins(o.broker))
    throw usage(
      `${o.broker} is the npm start demo's broker, which takes only its own meters' logins: start the demo with \`npm start -- --anonymous-broker\` to add simulated meters`,
    )
  if (!existsSync(paths.bytecode))
    throw new CliError(
      `${paths.bytecode} is missing: run \`npm run build:firmware\` (or \`citymeter build --board sim\`)`,
    )
  const ids = Array.from({ length: o.meters }, (_, i) => `${o.prefix}-${String(i + 1).padStart(3, "0")}`)
  const bad = ids.find((id) => !METER_ID_PATTERN.test(id))
  if (bad) throw usage(`meter id '${bad}' (from --prefix) must match ${METER_ID_PATTERN.source}`)
  const settings = {
    ...DEMO_ALARM_SETTINGS,
    MQTT_HOST: url.hostname,
    MQTT_PORT: Number(url.port || (url.protocol === "mqtts:" ? 8883 : 1883)),
    MQTT_PROTO: url.protocol === "mqtts:" ? "tls" : "tcp",
    MQTT_USER: o.username ?? "",
    MQTT_PASS: o.password ?? "",
    INTERVAL_S: o.interval,
    BATCH: o.batch,
  }
  print(`starting ${o.meters} simulated meter(s) (real firmware in the DeviceScript VM) against ${o.broker}`)
  print(DEMO_SPEED_NOTE)
  const pool = await SimPool.start({
    meters: ids.map((meterId) => ({ meterId, settings })),
    workers: o.workers,
    forward: o.verbose ? "all" : FORWARD_LINES,
    onLine: (meterId, line) => print(`${meterId}: ${line}`),
    onStarted: (meterId, done, total) =>
      print(`[${done}/${total}] ${meterId} running, ${o.interval} s × ${o.batch} per frame`),
  })
  print(`${o.meters} meter(s) running in ${pool.workerCount} worker thread(s)`)
  await (o.duration > 0
    ? Promise.race([new Promise((r) => setTimeout(r, o.duration * 1000)), stopSignal()])
    : stopSignal())
  await pool.stop()
  print(`stopped; frames made: ${[...pool.frames].map(([id, n]) => `${id}=${n}`).join(" ")}`)
  return pool.frames
}

export interface BridgeCliOptions {
  mqttUrl?: string
  databaseUrl?: string
  httpPort?: number
  httpHost?: string
  clientId?: string
  shareGroup?: string
  demo?: boolean
}

/** The bridge service: environment (README) first, flags override. Runs until SIGINT/SIGTERM. */
export async function bridge(o: BridgeCliOptions, print: Print): Promise<void> {
  const c: ServiceConfig = { ...configFromEnv() }
  if (o.mqttUrl !== undefined) {
    if (!/^mqtts?:\/\//.test(o.mqttUrl))
      throw usage(`--mqtt-url must start with mqtt:// or mqtts:// (got ${o.mqttUrl})`)
    c.mqttUrl = o.mqttUrl
  }
  if (o.databaseUrl !== undefined) c.databaseUrl = o.databaseUrl
  if (!/^(postgres(ql)?:\/\/|pglite:)/.test(c.databaseUrl))
    throw usage(`database URL must be postgres://… or pglite:<dir>|pglite:memory (got ${c.databaseUrl})`)
  if (o.httpPort !== undefined) c.httpPort = int("--http-port", o.httpPort, 0, 65535)
  if (o.httpHost !== undefined) c.httpHost = o.httpHost
  if (o.clientId !== undefined) c.clientId = o.clientId
  if (o.shareGroup !== undefined) c.shareGroup = o.shareGroup
  if (o.demo) c.demo = true
  print(`starting the bridge: store ${c.databaseUrl}, MQTT ${c.mqttUrl ?? `embedded on port ${c.embeddedMqttPort}`}`)
  const svc = await startService(c)
  print(
    `citymeter bridge (MODE=${svc.role}): MQTT ${svc.mqttUrl || "none"}, store ${svc.store.engine}, API ${svc.httpUrl}`,
  )
  await stopSignal()
  await svc.stop()
}
