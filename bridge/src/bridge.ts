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
  // callback: the broker's acknowledgement therefore waits for the commit (MQTT-4.3.2).
  client.handleMessage = (packet, done) => {
    ingest.handle(packet.topic, packet.payload as Buffer).then(
      () => done(),
      (e: Error) => {
        o.log.error({ err: e.message, topic: packet.topic }, "ingest failed; frame not acknowledged")
        done(e)
      },
    )
  }
  client.on("error", (e) => o.log.warn({ err: e.message }, "mqtt error"))
  let subscribed: () => void
  const ready = new Promise<void>((r) => (subscribed = r))
  client.on("connect", (ack) => {
    o.log.info({ url: o.mqttUrl, sessionPresent: ack.sessionPresent }, "bridge connected")
    client.subscribe(upFilter(o.shareGroup), { qos: 1 }, (err) => {
      if (err) o.log.error({ err: err.message }, "subscribe failed")
      else subscribed()
    })
  })
  return {
    client,
    ingest,
    send,
    ready,
    stop: async () => {
      ingest.stop()
      await client.endAsync()
    },
  }
}
