// The demo's broker logins (`npm start`, issue 26): one per demo meter (username = meter id, the
// shipped ACL's rule) and one for the bridge, new at every start. Two files in <data>/broker/, a
// mode-0700 directory, each mode 0600:
//   passwd       the Mosquitto password file (hashes) the embedded broker reads, as in production
//                (EMBEDDED_MQTT_PASSWORD_FILE); Mosquitto reads it too
//   logins.json  the same logins in the clear, and the broker they are for: how an operator
//                connects (`citymeter watch` uses the bridge's login from it on the demo's broker)
import { randomBytes } from "node:crypto"
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { hashPassword } from "../../bridge/src/acl.js"
import { paths } from "./paths.js"

export interface Login {
  username: string
  password: string
}

export interface DemoLogins {
  /** The broker these logins are for, mqtt://host:port. */
  broker: string
  /** The bridge's login: reads every uplink, writes every downlink (`citymeter watch` uses it). */
  bridge: Login
  /** Each demo meter's password; its username is its meter id. */
  meters: Record<string, string>
}

/** The demo's data directory: flash images, the broker's logins (npm start's ./data). */
export const DEMO_DATA_DIR = join(paths.root, "data")

export function demoLoginFiles(dataDir = DEMO_DATA_DIR) {
  const dir = join(dataDir, "broker")
  return { dir, passwordFile: join(dir, "passwd"), loginsFile: join(dir, "logins.json") }
}

const newPassword = () => randomBytes(18).toString("base64url")

/** New logins for these meters and the bridge user (the broker's URL is set once it listens). */
export function generateDemoLogins(meterIds: string[], bridgeUser: string): DemoLogins {
  return {
    broker: "",
    bridge: { username: bridgeUser, password: newPassword() },
    meters: Object.fromEntries(meterIds.map((id) => [id, newPassword()])),
  }
}

/** Writes a file readable by its owner only, whole (a temporary file, then a rename). */
function writePrivate(file: string, text: string) {
  const tmp = `${file}.${process.pid}.tmp`
  writeFileSync(tmp, text, { mode: 0o600 })
  chmodSync(tmp, 0o600) // an umask cannot widen it, but a leftover file's mode would stay
  renameSync(tmp, file)
}

/** Writes the password file (hashes) the broker reads; returns its path. */
export function writePasswordFile(logins: DemoLogins, dataDir = DEMO_DATA_DIR): string {
  const { dir, passwordFile } = demoLoginFiles(dataDir)
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  chmodSync(dir, 0o700)
  const users = [
    logins.bridge,
    ...Object.entries(logins.meters).map(([username, password]) => ({ username, password })),
  ]
  writePrivate(passwordFile, users.map((u) => `${u.username}:${hashPassword(u.password)}\n`).join(""))
  return passwordFile
}

/** Writes logins.json (the logins in the clear, for the operator); returns its path. */
export function writeLoginsFile(logins: DemoLogins, dataDir = DEMO_DATA_DIR): string {
  const { loginsFile } = demoLoginFiles(dataDir)
  writePrivate(loginsFile, `${JSON.stringify(logins, null, 2)}\n`)
  return loginsFile
}

/** Removes an earlier run's logins (a demo on an anonymous or external broker makes none). */
export function removeDemoLogins(dataDir = DEMO_DATA_DIR) {
  const { passwordFile, loginsFile } = demoLoginFiles(dataDir)
  for (const f of [passwordFile, loginsFile]) rmSync(f, { force: true })
}

/** The demo's logins when they are for `brokerUrl` (a demo that ran on another port wrote others). */
export function readDemoLogins(brokerUrl: string, dataDir = DEMO_DATA_DIR): DemoLogins | undefined {
  const { loginsFile } = demoLoginFiles(dataDir)
  if (!existsSync(loginsFile)) return undefined
  try {
    const logins = JSON.parse(readFileSync(loginsFile, "utf8")) as DemoLogins
    return logins.broker === brokerUrl && logins.bridge?.username ? logins : undefined
  } catch {
    return undefined // half-written by a demo starting now, or edited: no login
  }
}
