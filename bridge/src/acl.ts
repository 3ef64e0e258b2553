// Per-meter MQTT credentials and the topic ACL, for the embedded broker. The same rule is in
// deploy/mosquitto/acl for Mosquitto, and the credentials are Mosquitto's own password file
// (mosquitto_passwd), so one file serves both brokers:
//   a meter (username = meter id) writes only citymeter/v1/<itself>/up/… and reads only
//   citymeter/v1/<itself>/down/…; the bridge user reads every uplink and writes every downlink.
// The embedded broker also binds a meter's client id to its username (mayUseClientId), which a
// Mosquitto password file and ACL cannot express.
import { createHash, pbkdf2Sync, randomBytes, timingSafeEqual } from "node:crypto"
import { readFileSync } from "node:fs"
import { METER_ID_PATTERN, TOPIC_ROOT } from "./topics.js"

export const DEFAULT_BRIDGE_USER = "citymeter-bridge"

export type PasswordFile = Map<string, string>

/** Parses a Mosquitto password file (`user:$7$iterations$salt$hash` lines, as mosquitto_passwd writes). */
export function readPasswordFile(path: string): PasswordFile {
  const users: PasswordFile = new Map()
  for (const line of readFileSync(path, "utf8").split(/\r?\n/)) {
    const i = line.indexOf(":")
    if (i > 0 && !line.startsWith("#")) users.set(line.slice(0, i), line.slice(i + 1).trim())
  }
  return users
}

/** Checks a password against a Mosquitto hash: $7$ (PBKDF2-SHA512) or $6$ (SHA-512 of password + salt). */
export function checkPassword(hash: string, password: Buffer): boolean {
  const [, kind, ...rest] = hash.split("$")
  let expected: Buffer, actual: Buffer
  if (kind === "7" && rest.length === 3) {
    const [iterations, salt, digest] = rest
    expected = Buffer.from(digest, "base64")
    actual = pbkdf2Sync(password, Buffer.from(salt, "base64"), Number(iterations), expected.length, "sha512")
  } else if (kind === "6" && rest.length === 2) {
    const [salt, digest] = rest
    expected = Buffer.from(digest, "base64")
    actual = createHash("sha512").update(password).update(Buffer.from(salt, "base64")).digest()
  } else return false
  return actual.length === expected.length && timingSafeEqual(actual, expected)
}

/** Iterations, salt and digest sizes of the $7$ hashes mosquitto_passwd writes (Mosquitto 2). */
const PBKDF2 = { iterations: 101, saltBytes: 12, digestBytes: 64 }

/** A password file line's hash for `password`, in the $7$ form Mosquitto reads and checkPassword checks. */
export function hashPassword(password: string): string {
  const salt = randomBytes(PBKDF2.saltBytes)
  const digest = pbkdf2Sync(password, salt, PBKDF2.iterations, PBKDF2.digestBytes, "sha512")
  return `$7$${PBKDF2.iterations}$${salt.toString("base64")}$${digest.toString("base64")}`
}

/**
 * May `user` connect with `clientId`? A meter connects as its meter id (firmware/uplink.ts), so a
 * meter login must use its own name: it cannot take another meter's session, nor the bridge's
 * (issue 26: a stranger connecting as `demo-001` flapped that meter). The bridge user may use any
 * client id that is not another login's name.
 */
export function mayUseClientId(user: string, clientId: string, bridgeUser: string, logins: PasswordFile): boolean {
  if (user === bridgeUser) return clientId === user || !logins.has(clientId)
  return clientId === user
}

/** Removes an MQTT 5 shared-subscription prefix ($share/<group>/). */
const unshare = (filter: string) => (filter.startsWith("$share/") ? filter.split("/").slice(2).join("/") : filter)

/** May `user` publish on `topic` (write) or subscribe to `filter` (read)? */
export function mayAccess(user: string | undefined, bridgeUser: string, action: "write" | "read", topic: string) {
  if (!user) return false
  if (user === bridgeUser) {
    const t = unshare(topic)
    return action === "read" ? t.startsWith(`${TOPIC_ROOT}/`) : /^citymeter\/v1\/[^/+#]+\/down\//.test(t)
  }
  if (!METER_ID_PATTERN.test(user)) return false
  return topic.startsWith(`${TOPIC_ROOT}/${user}/${action === "write" ? "up" : "down"}/`)
}
