// The embedded default broker (aedes, MQTT 3.1.1), for running citymeter without a Mosquitto.
// Optional: TLS (cert + key) and per-meter credentials with the topic ACL of acl.ts (a Mosquitto
// password file) and each meter's client id bound to its login; without a password file it
// accepts anonymous clients (only with CITYMETER_MODE=demo, or `npm start -- --anonymous-broker`).
// Retained messages are kept only inside citymeter's topic tree and up to maxRetainedBytes: a
// larger one, or one on another topic (junk/…), is delivered to the clients subscribed now but not
// kept, counted (citymeter_broker_retained_refused_total) and logged per reason and interval.
import { readFileSync } from "node:fs"
import { createServer, type AddressInfo, type Server } from "node:net"
import { createServer as createTlsServer } from "node:tls"
import { Aedes, type AedesOptions, type Client, type PublishPacket } from "aedes"
import type { Logger } from "pino"
import { DEFAULT_BRIDGE_USER, checkPassword, mayAccess, mayUseClientId, readPasswordFile } from "./acl.js"
import { BRIDGE_DEFAULTS as D } from "./defaults.js"
import type { Metrics } from "./metrics.js"
import { SampledLog } from "./sampled-log.js"
import { TOPIC_ROOT } from "./topics.js"

export interface EmbeddedBroker {
  url: string
  port: number
  close(): Promise<void>
}

export interface EmbeddedBrokerOptions {
  /** Mosquitto password file: clients must log in, and the topic ACL applies. */
  passwordFile?: string
  /** The username with bridge rights (reads all uplinks, writes all downlinks). */
  bridgeUser?: string
  /** PEM files: serve mqtts:// instead of mqtt://. */
  tls?: { certFile: string; keyFile: string }
  /** The largest retained message kept, bytes (EMBEDDED_MQTT_MAX_RETAINED_BYTES); default 64 KiB. */
  maxRetainedBytes?: number
  /** Counts retained messages not kept; absent: not counted. */
  metrics?: Metrics
  /** Logs them (a sample and a count per reason and interval); absent: not logged. */
  log?: Logger
}

/**
 * authorizePublish that keeps a retained message only inside citymeter's tree and within the size
 * limit: otherwise its retain flag is cleared, so it reaches the clients subscribed now and is not
 * stored. An empty retained message (which clears one) is always let through.
 */
function retainedLimit(
  o: EmbeddedBrokerOptions,
  next: AedesOptions["authorizePublish"],
): AedesOptions["authorizePublish"] {
  const max = o.maxRetainedBytes ?? D.embeddedMqttMaxRetainedBytes
  const sampled = o.log && new SampledLog(o.log, "retained message not kept", D.rejectLogIntervalMs)
  const check = (client: Client | null, packet: PublishPacket) => {
    const bytes = packet.payload.length
    if (!packet.retain || bytes === 0) return
    const reason = !packet.topic.startsWith(`${TOPIC_ROOT}/`) ? "outside_tree" : bytes > max ? "too_large" : undefined
    if (!reason) return
    packet.retain = false
    o.metrics?.brokerRetainedRefused.inc({ reason })
    sampled?.note(reason, "warn", () => ({ topic: packet.topic, bytes, max, clientId: client?.id }))
  }
  return (client, packet, done) => {
    if (!next) {
      check(client, packet)
      return done(null)
    }
    next(client, packet, (err) => {
      if (!err) check(client, packet)
      done(err)
    })
  }
}

type Refusal = "login" | "client_id" | "publish" | "subscribe"

/**
 * aedes hooks enforcing the password file, the client id binding and the ACL (acl.ts); usernames
 * are kept per client. Every refusal is counted (citymeter_broker_refused_total) and logged per
 * reason and interval. A refused CONNECT never reaches aedes' session takeover: a refused client
 * cannot disconnect the meter or the bridge whose client id it gave.
 */
function authHooks(passwordFile: string, bridgeUser: string, o: EmbeddedBrokerOptions): AedesOptions {
  const users = readPasswordFile(passwordFile)
  const userOf = new WeakMap<object, string>()
  const sampled = o.log && new SampledLog(o.log, "broker refused a client", D.rejectLogIntervalMs)
  const refuse = (reason: Refusal, client: Client | null, fields: Record<string, unknown>) => {
    o.metrics?.brokerRefused.inc({ reason })
    sampled?.note(reason, "warn", () => ({ clientId: client?.id, user: client && userOf.get(client), ...fields }))
  }
  // [MQTT-3.2.2.3] CONNACK 2 "identifier rejected", 5 "not authorized"
  const denied = (returnCode = 5) =>
    Object.assign(new Error(returnCode === 2 ? "client id not allowed" : "not authorized"), { returnCode })
  return {
    authenticate: (client, username, password, done) => {
      const hash = username !== undefined ? users.get(username) : undefined
      if (!hash || !password || !checkPassword(hash, Buffer.from(password))) {
        refuse("login", client, { username: username ?? null })
        return done(denied(), false)
      }
      if (!mayUseClientId(username!, client.id, bridgeUser, users)) {
        refuse("client_id", client, { username })
        return done(denied(2), false)
      }
      userOf.set(client, username!)
      done(null, true)
    },
    // A refused publish closes the connection (MQTT 3.1.1 has no negative PUBACK).
    authorizePublish: (client, packet, done) => {
      if (client && mayAccess(userOf.get(client), bridgeUser, "write", packet.topic)) return done(null)
      refuse("publish", client, { topic: packet.topic })
      done(denied())
    },
    // A refused subscription gets return code 0x80 in the SUBACK.
    authorizeSubscribe: (client, sub, done) => {
      if (mayAccess(userOf.get(client), bridgeUser, "read", sub.topic)) return done(null, sub)
      refuse("subscribe", client, { topic: sub.topic })
      done(null, null as never)
    },
  }
}

export async function startEmbeddedBroker(
  port = 0,
  host = "127.0.0.1",
  o: EmbeddedBrokerOptions = {},
): Promise<EmbeddedBroker> {
  const hooks = o.passwordFile ? authHooks(o.passwordFile, o.bridgeUser ?? DEFAULT_BRIDGE_USER, o) : {}
  const tls = o.tls && { cert: readFileSync(o.tls.certFile), key: readFileSync(o.tls.keyFile) }
  const aedes = await Aedes.createBroker({ ...hooks, authorizePublish: retainedLimit(o, hooks.authorizePublish) })
  const server: Server = tls ? createTlsServer(tls, aedes.handle) : createServer(aedes.handle)
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(port, host, () => resolve())
  }).catch(async (e) => {
    // the port is taken: the broker made for it closes too (its timers would keep the process up)
    await new Promise<void>((closed) => aedes.close(() => closed()))
    throw e
  })
  const actual = (server.address() as AddressInfo).port
  return {
    url: `${o.tls ? "mqtts" : "mqtt"}://${host}:${actual}`,
    port: actual,
    close: () =>
      new Promise<void>((resolve) => {
        // destroy client sockets so close() does not wait for idle meters
        aedes.close(() => server.close(() => resolve()))
      }),
  }
}
