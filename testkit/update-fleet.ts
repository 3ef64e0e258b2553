// Meters for over-the-air update runs (tests/system/rollout-fleet.test.ts, bench/rollout.ts): a
// Pico W build that keeps its program in its flash as a board does (SimMeter programFrom "flash"),
// registered sealed with a WSSK link key, so that a rollout can reach it.
import { randomBytes } from "node:crypto"
import type { MeterLocation, Store } from "../bridge/src/store/store.js"
import { SimMeter } from "../sim/src/meter.js"

export const UPDATE_BOARD = "citymeter_picow"

export interface UpdateMeterOptions {
  meterId: string
  /** mqtt://host:port of the broker. */
  mqttUrl: string
  intervalS: number
  location?: MeterLocation
  /** A water register start, to tell the meters' readings apart. */
  volumeMl?: number
}

/** Registers the meter (sealed, a link key, its location) and starts it. */
export async function startUpdateMeter(store: Store, o: UpdateMeterOptions): Promise<SimMeter> {
  const key = randomBytes(32)
  await store.registerMeter(o.meterId, new Date(), { policy: "sealed", key })
  await store.setLinkKey(o.meterId, randomBytes(32))
  if (o.location) await store.setLocation(o.meterId, o.location)
  const url = new URL(o.mqttUrl)
  const m = new SimMeter({
    meterId: o.meterId,
    board: UPDATE_BOARD,
    programFrom: "flash",
    water: "register",
    settings: {
      BOARD: UPDATE_BOARD,
      MQTT_HOST: url.hostname,
      MQTT_PORT: Number(url.port),
      INTERVAL_S: o.intervalS,
      BATCH: 1,
      SEAL_KEY: key.toString("hex"),
    },
  })
  m.setWater({ volumeMl: o.volumeMl ?? 1000 })
  m.setElectricity({ energyWh: 100, powerW: 300, voltageDv: 2300 })
  m.setPressure(300_000)
  await m.start()
  return m
}
