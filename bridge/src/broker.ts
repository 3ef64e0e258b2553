// The embedded default broker (aedes, MQTT 3.1.1), for running citymeter without a Mosquitto.
// Optional: TLS (cert + key) and per-meter credentials with the topic ACL of acl.ts (a Mosquitto
// password file); without a password file it accepts anonymous clients (the demo default).
import { readFileSync } from "node:fs"
import { createServer, type AddressInfo, type Server } from "node:net"
import { createServer as createTlsServer } from "node:tls"
import { Aedes, type AedesOptions } from "aedes"
import { DEFAULT_BRIDGE_USER, checkPassword, mayAccess, readPasswordFile } from "./acl.js"

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
}

/** aedes hooks enforcing the password file and the ACL; usernames are kept per client. */
function authHooks(passwordFile: string, bridgeUser: string): AedesOptions {
  const users = readPasswordFile(passwordFile)
  const userOf = new WeakMap<object, string>()
  const denied = () => Object.assign(new Error("not authorized"), { returnCode: 5 })
  return {
    authenticate: (client, username, password, done) => {
      const hash = username !== undefined ? users.get(username) : undefined
      if (!hash || !password || !checkPassword(hash, Buffer.from(password))) return done(denied(), false)
      userOf.set(client, username!)
      done(null, true)
    },
    // A refused publish closes the connection (MQTT 3.1.1 has no negative PUBACK).
    authorizePublish: (client, packet, done) =>
      done(client && mayAccess(userOf.get(client), bridgeUser, "write", packet.topic) ? null : denied()),
    // A refused subscription gets return code 0x80 in the SUBACK.
    authorizeSubscribe: (client, sub, done) =>
      done(null, mayAccess(userOf.get(client), bridgeUser, "read", sub.topic) ? sub : (null as never)),
  }
}

export async function startEmbeddedBroker(
  port = 0,
  host = "127.0.0.1",
  o: EmbeddedBrokerOptions = {},
): Promise<EmbeddedBroker> {
  const aedes = await Aedes.createBroker(
    o.passwordFile ? authHooks(o.passwordFile, o.bridgeUser ?? DEFAULT_BRIDGE_USER) : {},
  )
  const server: Server = o.tls
    ? createTlsServer({ cert: readFileSync(o.tls.certFile), key: readFileSync(o.tls.keyFile) }, aedes.handle)
    : createServer(aedes.handle)
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(port, host, () => resolve())
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
