// The bridge service: MQTT subscription → Ingest → data tier, downlinks back to meters.
import mqtt, { type IClientOptions, type MqttClient } from "mqtt"
import type { Logger } from "pino"
import { Ingest, type IngestOptions, type SendDownlink } from "./ingest.js"
import type { Metrics } from "./metrics.js"
import type { Store } from "./store/store.js"
import { downTopic, upFilter } from "./topics.js"

export interface BridgeOptions extends IngestOptions {
  mqttUrl: string
  store: Store
  metrics: Metrics
  log: Logger
  /** Stable client id: with a persistent session the broker keeps QoS 1 uplinks while we are away. */
  clientId?: string
  /** MQTT 5 shared subscription group (scale-out); needs an MQTT 5 broker. */
  shareGroup?: string
  protocolVersion?: 4 | 5
  mqttOptions?: IClientOptions
}

export interface Bridge {
  client: MqttClient
  ingest: Ingest
  /** Publishes a downlink (QoS 1); resolves when the broker has it. */
  send: SendDownlink
  /** Resolves once subscribed. */
  ready: Promise<void>
  /** The uplink subscription is in place (granted by the broker's SUBACK, connection up). */
  readonly subscribed: boolean
  stop(): Promise<void>
}

export function startBridge(o: BridgeOptions): Bridge {
  const protocolVersion = o.protocolVersion ?? (o.shareGroup ? 5 : 4)
  const client = mqtt.connect(o.mqttUrl, {
    clientId: o.clientId ?? `citymeter-bridge-${process.pid}`,
    clean: false,
    protocolVersion,
    // MQTT 5 [3.1.2.11.2]: without a session expiry the session ends with the connection.
    properties: protocolVersion === 5 ? { sessionExpiryInterval: 7 * 24 * 3600 } : undefined,
    reconnectPeriod: 500,
    connectTimeout: 5000,
    ...o.mqttOptions,
  })
  const send: SendDownlink = async (meterId, kind, payload) => {
    const t0 = Date.now()
    await client.publishAsync(downTopic(meterId, kind), Buffer.from(payload), { qos: 1 })
    o.log.debug({ meterId, kind, ms: Date.now() - t0 }, "downlink acknowledged by broker")
  }
  const ingest = new Ingest(o.store, send, o.metrics, o.log, o)
  // mqtt.js calls handleMessage one message at a time and sends the PUBACK only after its
  // callback: the broker's acknowledgement therefore waits for the commit (MQTT-4.3.2). handle()
  // settles every frame itself (stored, duplicate or dead-lettered) and only waits, unresolved,
  // while the data tier is unavailable; it rejects only when the bridge stops.
  client.handleMessage = (packet, done) => {
    ingest.handle(packet.topic, packet.payload as Buffer).then(
      () => done(),
      (e: Error) => {
        o.log.warn({ err: e.message, topic: packet.topic }, "bridge stopping; frame left unacknowledged")
        done(e)
      },
    )
  }
  client.on("error", (e) => o.log.warn({ err: e.message }, "mqtt error"))
  let subscribed = false
  let stopped = false
  let resolveReady: () => void
  const ready = new Promise<void>((r) => (resolveReady = r))
  const subscribe = () => {
    client.subscribe(upFilter(o.shareGroup), { qos: 1 }, (err, granted) => {
      // [MQTT-3.9.3] return code 0x80 (128): the broker refused the subscription
      const refused =
        err ?? (granted?.some((g) => g.qos === 128) ? new Error("refused by the broker (SUBACK 0x80)") : null)
      if (refused) {
        o.log.error({ err: refused.message, filter: upFilter(o.shareGroup) }, "subscribe failed; retrying")
        if (!stopped && client.connected) setTimeout(subscribe, 1000)
        return
      }
      subscribed = true
      resolveReady()
    })
  }
  client.on("connect", (ack) => {
    o.log.info({ url: o.mqttUrl, sessionPresent: ack.sessionPresent }, "bridge connected")
    subscribe()
  })
  client.on("close", () => (subscribed = false))
  return {
    client,
    ingest,
    send,
    ready,
    get subscribed() {
      return subscribed
    },
    stop: async () => {
      stopped = true
      ingest.stop()
      await client.endAsync()
    },
  }
}
