// Which broker `watch` and `sim` talk to when --broker is not given: $MQTT_URL, else the broker of
// the `npm start` demo when one listens (embedded, EMBEDDED_MQTT_PORT, default BRIDGE_DEFAULTS.embeddedMqttPort), else a
// local Mosquitto on 1883. The choice is printed, so a silent watcher always says where it listens.
import { connect } from "node:net"
import { BRIDGE_DEFAULTS } from "../bridge/src/defaults.js"

export const DEMO_BROKER_PORT = Number(process.env.EMBEDDED_MQTT_PORT ?? BRIDGE_DEFAULTS.embeddedMqttPort)
export const DEMO_BROKER = `mqtt://127.0.0.1:${DEMO_BROKER_PORT}`
export const LOCAL_BROKER = "mqtt://127.0.0.1:1883"
export const BROKER_HELP = `broker URL (default: $MQTT_URL, else the npm start demo's ${DEMO_BROKER} when it runs, else ${LOCAL_BROKER})`

function listening(port: number, host = "127.0.0.1", timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ port, host })
    const done = (ok: boolean) => {
      s.destroy()
      resolve(ok)
    }
    s.setTimeout(timeoutMs, () => done(false))
    s.once("connect", () => done(true))
    s.once("error", () => done(false))
  })
}

/** The broker to use and a note saying why it was chosen (printed to stderr by the caller). */
export async function resolveBroker(given: string | undefined): Promise<{ url: string; note?: string }> {
  if (given) return { url: given }
  if (process.env.MQTT_URL) return { url: process.env.MQTT_URL, note: `broker ${process.env.MQTT_URL} (from MQTT_URL)` }
  if (await listening(DEMO_BROKER_PORT))
    return { url: DEMO_BROKER, note: `broker ${DEMO_BROKER} (the npm start demo's; --broker to choose another)` }
  return {
    url: LOCAL_BROKER,
    note: `broker ${LOCAL_BROKER} (no demo broker on ${DEMO_BROKER}; --broker to choose another)`,
  }
}
