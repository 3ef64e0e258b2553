// The demo's parts, started and stopped together: `npm start` (scripts/start.ts) runs this, and
// so do the tests (tests/system/demo-sealed.test.ts). The bridge service on embedded defaults in
// demo mode, and simulated meters running the real firmware, which by default (issue 26):
//   - seal their frames: a key per meter, in the registry and in the meter's settings (SEAL_KEY),
//     kept in the registry across restarts (a key rotated from the dashboard stays rotated);
//   - log in to the embedded broker with logins generated at every start (sim/src/demo-logins.ts),
//     under the production ACL and client id binding (bridge/src/acl.ts); the bridge logs in too.
// `open` (--open) keeps the legacy open frames; `anonymousBroker` (--anonymous-broker) the broker
// without logins. With MQTT_URL the broker is the user's own: no logins are made for it.
// `city` (npm start's default, issue 25 item 6) runs the small city of sim/scenarios/city.ts
// (demoCity) instead of `meters` households: its meters, their places and its DMAs registered at
// start, each meter driven by its place in the city (sim/src/demo.ts driveDemo).
import { join } from "node:path"
import { mkdirSync } from "node:fs"
import { DEFAULT_BRIDGE_USER } from "../bridge/src/acl.js"
import { newKey } from "../bridge/src/seal.js"
import { startService, type Service, type ServiceConfig } from "../bridge/src/service.js"
import type { Store } from "../bridge/src/store/store.js"
import { DEMO_ALARM_SETTINGS, driveDemo } from "../sim/src/demo.js"
import {
  generateDemoLogins,
  removeDemoLogins,
  writeLoginsFile,
  writePasswordFile,
  type DemoLogins,
} from "../sim/src/demo-logins.js"
import { SimMeter, type MeterLineKind } from "../sim/src/meter.js"
import type { CityPlan } from "../sim/src/city.js"
import { registerCity } from "../sim/src/city-registry.js"
import { demoCity } from "../sim/scenarios/city.js"

export interface DemoOptions {
  /** The bridge's configuration (configFromEnv()): the demo adds demo mode and the broker's logins. */
  config: ServiceConfig
  /** Household meters (without `city`). */
  meters: number
  /**
   * Run the small city (true: demoCity, or the plan given, whose meter ids are the demo's): its
   * meters instead of `meters`, its DMAs and their meters' places registered at start.
   */
  city?: boolean | CityPlan
  intervalS: number
  batch: number
  /** Flash images (flash/) and the broker's logins (broker/): npm start's ./data. */
  dataDir: string
  /** --open: the meters send open frames, as before issue 26. */
  open?: boolean
  /** --anonymous-broker: the embedded broker takes anyone, with no login and no ACL. */
  anonymousBroker?: boolean
  /** Each meter's firmware console lines. */
  meterLog?: (meterId: string, line: string, kind: MeterLineKind) => void
}

export interface Demo {
  svc: Service
  meters: SimMeter[]
  /** The broker's logins, with the files holding them; none on an anonymous or external broker. */
  logins?: DemoLogins & { passwordFile: string; loginsFile: string }
  /** Stops the meters, waits for their Deaths, stops the service; the meters marked offline by hand. */
  stop(): Promise<string[]>
}

/** How long a clean stop waits for the meters' Death frames (their MQTT wills) to be stored. */
const DEATH_WAIT_MS = 5000

export const demoMeterId = (i: number) => `demo-${String(i).padStart(3, "0")}`

/**
 * The meter's key: the registry's when it already seals (a restart, a rotated key), else a new
 * one, registered. `open` makes the meter open again (a demo run sealed before). The nextKey of a
 * rotation the bridge never saw confirmed is dropped: the meter is given the registry's key.
 */
async function provisionSeal(store: Store, meterId: string, open: boolean): Promise<Buffer | undefined> {
  const row = await store.getMeter(meterId)
  if (open) {
    if (row?.seal.policy !== "open") await store.setSeal(meterId, { policy: "open", key: null, nextKey: null })
    return undefined
  }
  const key = row?.seal.policy === "sealed" && row.seal.key ? Buffer.from(row.seal.key) : newKey()
  if (!row) await store.registerMeter(meterId, new Date(), { policy: "sealed", key })
  else await store.setSeal(meterId, { policy: "sealed", key, nextKey: null })
  return key
}

export async function startDemo(o: DemoOptions): Promise<Demo> {
  const city = o.city === true ? demoCity(demoMeterId) : o.city || undefined
  const ids = city ? city.meters.map((m) => m.meterId) : Array.from({ length: o.meters }, (_, i) => demoMeterId(i + 1))
  const embedded = !o.config.mqttUrl
  const bridgeUser = o.config.embeddedBroker?.bridgeUser ?? DEFAULT_BRIDGE_USER
  const logins = embedded && !o.anonymousBroker ? generateDemoLogins(ids, bridgeUser) : undefined
  if (!logins) removeDemoLogins(o.dataDir)
  const passwordFile = logins && writePasswordFile(logins, o.dataDir)
  const svc = await startService({
    ...o.config,
    demo: true,
    ...(logins && {
      embeddedBroker: { ...o.config.embeddedBroker, passwordFile, bridgeUser },
      mqttUsername: logins.bridge.username,
      mqttPassword: logins.bridge.password,
    }),
  })
  const meters: SimMeter[] = []
  let stopDriving = () => {}
  try {
    const broker = new URL(svc.mqttUrl)
    const loginsFile = logins && writeLoginsFile({ ...logins, broker: svc.mqttUrl }, o.dataDir)
    const flashDir = join(o.dataDir, "flash")
    mkdirSync(flashDir, { recursive: true })
    for (const meterId of ids) {
      const key = await provisionSeal(svc.store, meterId, !!o.open)
      meters.push(
        new SimMeter({
          meterId,
          water: "register", // the demo runs at 60x: pulses that fast are past the GPIO polling
          flashFile: join(flashDir, `${meterId}.bin`),
          log: o.meterLog && ((line, kind) => o.meterLog!(meterId, line, kind)),
          settings: {
            ...DEMO_ALARM_SETTINGS,
            MQTT_HOST: broker.hostname,
            MQTT_PORT: Number(broker.port),
            INTERVAL_S: o.intervalS,
            BATCH: o.batch,
            // "" clears a key an earlier sealed run left in the meter's flash
            SEAL_KEY: key ? key.toString("hex") : "",
            ...(logins && { MQTT_USER: meterId, MQTT_PASS: logins.meters[meterId] }),
          },
        }),
      )
    }
    if (city) await registerCity(svc.store, city)
    stopDriving = driveDemo(meters, city)
    for (const m of meters) await m.start()
    return {
      svc,
      meters,
      logins: logins && { ...logins, broker: svc.mqttUrl, passwordFile: passwordFile!, loginsFile: loginsFile! },
      stop: async () => {
        stopDriving()
        for (const m of meters) await m.stop()
        const forced = await awaitDeaths(svc.store, ids)
        await svc.stop()
        return forced
      },
    }
  } catch (e) {
    stopDriving()
    for (const m of meters) if (m.running) await m.stop()
    await svc.stop()
    throw e
  }
}

/** After the VMs stop, the broker publishes each meter's will (its Death); wait until it is stored. */
async function awaitDeaths(store: Store, ids: string[]): Promise<string[]> {
  const online = async () =>
    (await Promise.all(ids.map((id) => store.getMeter(id)))).filter((r) => r?.online).map((r) => r!)
  const until = Date.now() + DEATH_WAIT_MS
  let left = await online()
  while (left.length && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 100))
    left = await online()
  }
  // no Death in time (an external broker that was gone, say): offline explicitly, for that boot
  for (const r of left) if (r.boot !== null) await store.recordDeath(r.meterId, r.boot, new Date())
  return left.map((r) => r.meterId)
}
