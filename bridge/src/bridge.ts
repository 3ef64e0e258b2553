// The bridge service: MQTT subscription → Ingest → data tier, downlinks back to meters.
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from "mqtt"
import type { Logger } from "pino"
import { BRIDGE_DEFAULTS } from "./defaults.js"
import { Ingest, type IngestOptions, type SendDownlink } from "./ingest/index.js"
import type { Metrics } from "./metrics.js"
import { sendPuback } from "./mqtt-puback.js"
import type { Store } from "./store/store.js"
import { downTopic, upFilter, type DownKind } from "./topics.js"

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
  /**
   * Uplinks the broker may send before their PUBACKs (default: two batches): the MQTT 5 Receive
   * Maximum; Mosquitto's max_inflight_messages for MQTT 3.1.1 (deploy/mosquitto). A broker that
   * sends more (aedes sets no limit) is read on up to twice as many, then no further until a
   * batch commits.
   */
  maxInFlight?: number
}

export interface Bridge {
  /** The uplink connection (persistent session, subscription). */
  client: MqttClient
  /** The downlink connection (acks, time, config to meters). */
  downlinks: MqttClient
  ingest: Ingest
  /** Publishes a downlink (QoS 1); resolves when the broker has it. */
  send: SendDownlink
  /** Resolves once subscribed. */
  ready: Promise<void>
  /** The uplink subscription is in place (granted by the broker's SUBACK, connection up). */
  readonly subscribed: boolean
  /**
   * Reads no further uplink, lets ingest commit the frames in hand and sends their acks and
   * PUBACKs (for at most drainMs, default BRIDGE_DEFAULTS.drainMs), then disconnects. What arrives
   * meanwhile, or is still in hand after drainMs, is left unacknowledged: sent again later.
   */
  stop(drainMs?: number): Promise<void>
}

/**
 * mqtt.js traces every packet through `debug` (about fifteen calls per uplink, each checking whether
 * DEBUG enables it): a no-op logger unless DEBUG is set.
 */
const quiet: Pick<IClientOptions, "log"> = process.env.DEBUG ? {} : { log: () => {} }

export function startBridge(o: BridgeOptions): Bridge {
  const protocolVersion = o.protocolVersion ?? (o.shareGroup ? 5 : 4)
  const maxInFlight = o.maxInFlight ?? 2 * (o.batchMaxFrames ?? BRIDGE_DEFAULTS.batchMaxFrames)
  const clientId = o.clientId ?? `citymeter-bridge-${process.pid}`
  const client = mqtt.connect(o.mqttUrl, {
    clientId,
    clean: false,
    protocolVersion,
    // MQTT 5 [3.1.2.11.2]: without a session expiry the session ends with the connection.
    // MQTT 5 [3.1.2.11.3] Receive Maximum: how many QoS 1 uplinks the broker may send before our
    // PUBACKs (Mosquitto uses it instead of max_inflight_messages); two batches keep the pipeline full.
    properties:
      protocolVersion === 5 ? { sessionExpiryInterval: 7 * 24 * 3600, receiveMaximum: maxInFlight } : undefined,
    reconnectPeriod: 500,
    connectTimeout: 5000,
    ...quiet,
    ...o.mqttOptions,
    // connected once the downlink connection is up: a backlog starts flowing at the CONNACK
    manualConnect: true,
  })
  // Downlinks (acks to meters, time, config) leave on a connection of their own: the uplink
  // connection stops reading while a backlog waits for its commits (deferredPubacks), and the
  // broker's PUBACKs for downlinks would wait behind it (measured: 65,535 downlinks in flight
  // and 2.5 GB while draining 1M frames on one connection).
  const { client: downlinks, send } = connectDownlinks({ ...o, clientId: `${clientId}-down`, protocolVersion })
  let uplinkStarted = false
  let stopped = false
  downlinks.on("connect", () => {
    if (!uplinkStarted && !stopped) {
      uplinkStarted = true
      client.connect()
    }
  })
  const ingest = new Ingest(o.store, send, o.metrics, o.log, o)
  const acks = deferredPubacks(client, ingest, o.log, 2 * maxInFlight)
  client.handleMessage = acks.handleMessage
  client.on("error", (e) => o.log.warn({ err: e.message }, "mqtt error"))
  let subscribed = false
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
    downlinks,
    ingest,
    send,
    ready,
    get subscribed() {
      return subscribed
    },
    stop: async (drainMs = BRIDGE_DEFAULTS.drainMs) => {
      stopped = true
      if (!(await acks.drain(drainMs)))
        o.log.warn({ frames: ingest.pending, drainMs }, "stopping with frames in hand; they stay unacknowledged")
      ingest.stop()
      await Promise.all([uplinkStarted ? endClient(client) : undefined, endClient(downlinks)])
    },
  }
}

export interface DownlinkOptions {
  mqttUrl: string
  clientId: string
  protocolVersion?: 4 | 5
  mqttOptions?: IClientOptions
  log: Logger
}

/**
 * A connection that only publishes downlinks (acks, time, config, resend to meters) and subscribes
 * to nothing: the bridge's second connection, and an API-only process's (MODE=api) own.
 */
export function connectDownlinks(o: DownlinkOptions): { client: MqttClient; send: SendDownlink } {
  const downlinks = mqtt.connect(o.mqttUrl, {
    clientId: o.clientId,
    clean: true,
    protocolVersion: o.protocolVersion ?? 4,
    reconnectPeriod: 500,
    connectTimeout: 5000,
    // a PUBACK per downlink would reset the keepalive timer each time (two timer calls per frame);
    // pings go every keepalive period instead
    reschedulePings: false,
    ...quiet,
    ...o.mqttOptions,
  })
  downlinks.on("error", (e) => o.log.warn({ err: e.message }, "mqtt error (downlinks)"))
  // While it is down, downlinks fail at once instead of queueing in mqtt.js: its replay of queued
  // QoS 1 messages after a (re)connect goes one message per round trip and holds every new one
  // behind it (client.js startStreamProcess), which stalled acks for minutes under load. An ack
  // that fails is not lost: the meter sends the frame again, and it is acknowledged as a duplicate.
  let downlinksUp = false
  downlinks.on("connect", () => (downlinksUp = true))
  downlinks.on("close", () => (downlinksUp = false))
  // the downlinks of one batch (an ack per frame) leave in one write: corked until this tick ends
  let corked: NodeJS.WritableStream | undefined
  const uncork = () => {
    const s = corked as unknown as { uncork(): void }
    corked = undefined
    s.uncork()
  }
  const send: SendDownlink = (meterId, kind, payload) => {
    if (!downlinksUp) return Promise.reject(new Error("the downlink connection is down"))
    if (!corked && downlinks.stream) {
      corked = downlinks.stream
      downlinks.stream.cork()
      process.nextTick(uncork)
    }
    const topic = downTopic(meterId, kind)
    const qos = DOWNLINK_QOS[kind]
    // QoS 0: written, nothing to wait for (a callback would wait for the socket's drain, one
    // listener per ack while a batch's acks fill the corked stream)
    if (qos === 0) {
      downlinks.publish(topic, Buffer.from(payload), { qos })
      return Promise.resolve()
    }
    return new Promise((resolve, reject) =>
      downlinks.publish(topic, Buffer.from(payload), { qos }, (err) => (err ? reject(err) : resolve())),
    )
  }
  return { client: downlinks, send }
}

/**
 * The broker's acknowledgements (PUBACK) follow the commit of their frame's batch, in the order the
 * uplinks were received ([MQTT-4.6.0-2]), while mqtt.js goes on reading the next uplinks.
 *
 * mqtt.js hands one message at a time to handleMessage and reads the next packet only after its
 * callback; called without an error, the callback sends the PUBACK first (handlers/publish.js). So
 * the callback is called at once with DEFERRED, which makes mqtt.js skip its PUBACK and go on, and
 * the PUBACK is sent here when the frame's batch has committed and every earlier uplink has been
 * acknowledged. Beyond `limit` unacknowledged uplinks the callback waits, which stops mqtt.js
 * reading the socket (TCP backpressure) until a batch commits (downlinks have their own connection,
 * so their acknowledgements do not wait behind). A PUBACK goes only on the
 * connection that delivered its PUBLISH: after a reconnect the broker sends unacknowledged QoS 1
 * messages again (persistent session), and the frame ledger makes the second copy a duplicate.
 */
function deferredPubacks(client: MqttClient, ingest: Ingest, log: Logger, limit: number) {
  interface Pending {
    messageId: number
    /** The connection (socket stream) the PUBLISH came on. */
    stream: unknown
    settled: boolean
    /** Not to be acknowledged: the bridge stopped before its commit. */
    drop: boolean
  }
  const fifo: Pending[] = []
  const waiting: (() => void)[] = []
  /** Uplinks at QoS 0 submitted and not settled (none from meters, which publish at QoS 1). */
  let unsettledQos0 = 0
  /** Stopping: uplinks are no longer read; called once nothing is in hand. */
  let onDrained: (() => void) | undefined
  const checkDrained = () => {
    if (onDrained && !fifo.length && !unsettledQos0) onDrained()
  }
  /** Streams on which a frame was left unacknowledged: no later PUBACK may overtake it there. */
  const halted = new WeakSet<object>()
  let flushQueued = false
  const flush = () => {
    flushQueued = false
    // a batch's PUBACKs leave in one write (cork until the loop is done)
    const out = client.connected ? client.stream : undefined
    out?.cork()
    try {
      while (fifo.length && fifo[0].settled) {
        const p = fifo.shift()!
        const stream = p.stream as object
        if (p.drop) halted.add(stream)
        else if (out === stream && !halted.has(stream)) sendPuback(client, p.messageId)
      }
    } finally {
      out?.uncork()
    }
    while (waiting.length && fifo.length < limit) waiting.shift()!()
    checkDrained()
  }
  /** Flushes once the frames settled together (a batch) are all marked. */
  const flushSoon = () => {
    if (flushQueued) return
    flushQueued = true
    queueMicrotask(flush)
  }
  const handleMessage = (packet: IPublishPacket, done: (err?: Error) => void) => {
    // draining: not handed to ingest, and done() never called, so mqtt.js reads nothing further
    if (onDrained) return
    if (packet.qos === 0 || packet.messageId === undefined) {
      // no acknowledgement to defer (meters publish at QoS 1)
      unsettledQos0++
      ingest.submit(packet.topic, packet.payload as Buffer, new Date(), () => {
        unsettledQos0--
        checkDrained()
      })
      return done()
    }
    const p: Pending = { messageId: packet.messageId, stream: client.stream, settled: false, drop: false }
    fifo.push(p)
    ingest.submit(packet.topic, packet.payload as Buffer, new Date(), (e) => {
      if (e) {
        log.warn({ err: e.message, topic: packet.topic }, "bridge stopping; frame left unacknowledged")
        p.drop = true
      }
      p.settled = true
      flushSoon()
    })
    const next = () => done(DEFERRED)
    if (fifo.length < limit) next()
    else waiting.push(next)
  }
  /** Stops reading uplinks; resolves true once every frame in hand is settled and its PUBACK sent, false after ms. */
  const drain = (ms: number) =>
    new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), ms)
      onDrained = () => {
        clearTimeout(timer)
        resolve(true)
      }
      checkDrained()
    })
  return { handleMessage, drain }
}

/**
 * QoS per downlink kind (proto/topics.md). Acks go at QoS 0: meters connect with a clean session
 * [MQTT-3.1.2-6], so the broker keeps nothing for an offline meter whatever the QoS, and on a live
 * connection TCP already delivers in order; an ack lost with its connection is made good by the
 * meter, which sends every unacknowledged frame again on connecting (acked as a duplicate). QoS 1
 * would add a PUBACK per frame on both of the broker's connections for no guarantee.
 */
const DOWNLINK_QOS: Record<DownKind, 0 | 1> = { ack: 0, time: 1, config: 1, resend: 1, update: 1 }

/**
 * Disconnects. A client still connecting is ended at once: mqtt.js's gentle end() then leaves
 * its socket open (seen with mqtt 5.16: a start that failed kept one), and has nothing to flush.
 */
export const endClient = (c: MqttClient) => c.endAsync(!c.connected)

/** handleMessage's callback error that makes mqtt.js skip its own PUBACK; ours follows the commit. */
const DEFERRED = new Error("PUBACK deferred until the frame's batch commits")
