// `citymeter watch <meter>`: live frames of one meter (or all, with '+'), decoded as the bridge
// decodes them; rejected frames are shown with the bridge's reject code and their bytes.
import mqtt from "mqtt"
import { decodeUplink, readEnvelope } from "../bridge/src/codec.js"
import { num } from "../bridge/src/codec/payload.js"
import { FrameError } from "../bridge/src/codec/frames.js"
import { DOWN_KINDS, METER_ID_PATTERN, TOPIC_ROOT, UP_KINDS, type DownKind, type UpKind } from "../bridge/src/topics.js"
import { readDemoLogins } from "../sim/src/demo-logins.js"
import { CliError, usage } from "./errors.js"
import { describeDownlink, describeUplink } from "./format.js"

export interface WatchOptions {
  url: string
  username?: string
  password?: string
  /** Exit after this many frames. */
  count?: number
  /** Exit (code 1) when nothing arrived for this long, seconds. */
  timeout?: number
  hex?: boolean
}

/** Lines for one message on citymeter/v1/<meter>/<dir>/<kind>. */
export function describeMessage(topic: string, payload: Uint8Array): string[] {
  const [, , meter, dir, kind] = topic.split("/")
  const head = `${new Date().toISOString()} ${meter} ${dir}/${kind} (${payload.length} B)`
  try {
    if (dir === "up" && (UP_KINDS as readonly string[]).includes(kind)) {
      // watch holds no keys: a sealed frame shows what travels in the clear (the demo's meters seal)
      const { uplink } = readEnvelope(kind as UpKind, payload)
      if (uplink.body === "sealed")
        return [
          `${head} sealed: boot ${num(uplink.boot)} seq ${num(uplink.seq)} link ${num(uplink.link)}, ${uplink.sealed!.length} B of ciphertext (the bridge opens it with the meter's key)`,
        ]
      const [first, ...rest] = describeUplink(decodeUplink(kind as UpKind, payload))
      return [`${head} ${first}`, ...rest]
    }
    if (dir === "down" && (DOWN_KINDS as readonly string[]).includes(kind))
      return [`${head} ${describeDownlink(payload, kind as DownKind)}`]
    return [`${head} not a citymeter topic`]
  } catch (e) {
    const why = e instanceof FrameError ? `${e.code}: ${e.message}` : (e as Error).message
    return [`${head} REJECTED ${why}`, `  bytes ${Buffer.from(payload).toString("hex")}`]
  }
}

export async function watch(meter: string, o: WatchOptions, print: (line: string) => void): Promise<number> {
  if (meter !== "+" && !METER_ID_PATTERN.test(meter))
    throw usage(`meter id '${meter}' must match ${METER_ID_PATTERN.source}, or be '+' for every meter`)
  if (!/^mqtts?:\/\//.test(o.url)) throw usage(`broker URL must start with mqtt:// or mqtts:// (got ${o.url})`)
  const filter = `${TOPIC_ROOT}/${meter}/#`
  // the npm start demo's broker takes logins only: without one given, the demo's bridge login
  const demoLogin = o.username === undefined ? readDemoLogins(o.url)?.bridge : undefined
  const client = mqtt.connect(o.url, {
    username: o.username ?? demoLogin?.username,
    password: o.username === undefined ? demoLogin?.password : o.password,
    clientId: `citymeter-watch-${process.pid}-${Date.now().toString(36)}`,
    reconnectPeriod: 1000,
    connectTimeout: 5000,
  })
  let seen = 0
  return new Promise<number>((resolve, reject) => {
    let idle: NodeJS.Timeout | undefined
    const arm = () => {
      if (!o.timeout) return
      clearTimeout(idle)
      idle = setTimeout(() => finish(new CliError(`no frame on ${filter} within ${o.timeout} s`)), o.timeout * 1000)
    }
    const finish = (err?: Error) => {
      clearTimeout(idle)
      client.end(true, () => (err ? reject(err) : resolve(seen)))
    }
    let firstConnect = true
    client.on("connect", () => {
      client.subscribe(filter, { qos: 0 }, (err) => {
        if (err) return finish(new CliError(`subscribe to ${filter} failed: ${err.message}`))
        if (firstConnect)
          print(
            `watching ${filter} on ${o.url}${demoLogin ? ` as ${demoLogin.username} (the demo's login)` : ""} (Ctrl-C to stop)`,
          )
        firstConnect = false
        arm()
      })
    })
    client.on("error", (e) => {
      if (firstConnect) finish(new CliError(`cannot connect to ${o.url}: ${e.message}`))
    })
    client.on("message", (topic, payload) => {
      for (const l of describeMessage(topic, payload)) print(l)
      if (o.hex) print(`  hex ${payload.toString("hex")}`)
      seen++
      if (o.count && seen >= o.count) finish()
      else arm()
    })
    client.on("offline", () => {
      if (firstConnect) finish(new CliError(`cannot connect to ${o.url}`))
    })
    process.once("SIGINT", () => finish())
  })
}
