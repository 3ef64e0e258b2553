// `citymeter provision --wssk-url`: a WSSK link key per meter (issue 23), the connection string the
// runtime reads (`wssk_connstr`: ws[s]://wssk:<64 hex key>@host[:port]/wssk/<meter id>, see
// docs/ota-spike.md) and the key's registration with the bridge (PUT /meters/:id/link-key). The
// settings service cannot write `wssk_connstr`: whoever writes it (a host tool through the Cloud
// Configuration service, or the firmware in its maintenance window) takes it from the file written
// here, <provision folder>/wssk-connstr (mode 0600), never from stdout.
import { randomBytes } from "node:crypto"
import { chmodSync, existsSync, readFileSync, writeFileSync } from "node:fs"
import { join, resolve } from "node:path"
import { LINK_KEY_BYTES, connectionString } from "../bridge/src/wssk/protocol.js"
import { CliError, usage } from "./errors.js"
import type { BridgeTarget } from "./provision.js"

export const CONNSTR_FILE = "wssk-connstr"
const TIMEOUT_MS = 10_000

/** Checks --wssk-url (ws://host:port or wss://host[:port], no path) before anything is written. */
export function wsskBase(raw: string): string {
  try {
    connectionString(raw, "m", Buffer.alloc(LINK_KEY_BYTES))
  } catch {
    throw usage(
      `--wssk-url must be ws://host:port or wss://host[:port], without credentials, path, query or fragment (got ${raw})`,
    )
  }
  return raw
}

/** The connection string with its key hidden, for output. */
export const maskedConnstr = (conn: string) => conn.replace(/wssk:[0-9a-f]{64}@/, "wssk:****@")

/** A new link key and the meter's connection string, written to <dir>/wssk-connstr (mode 0600). */
export function writeLink(dir: string, base: string, meterId: string, force = false) {
  const file = join(resolve(dir), CONNSTR_FILE)
  if (existsSync(file) && !force) throw usage(`${file} exists; pass --force to overwrite it`)
  const key = randomBytes(LINK_KEY_BYTES)
  const conn = connectionString(base, meterId, key)
  writeFileSync(file, conn + "\n", { mode: 0o600 })
  chmodSync(file, 0o600)
  return { file, conn, key: key.toString("hex") }
}

/** The link key in a provision folder's wssk-connstr, or undefined when it has none. */
export function readLinkKey(settingsDir: string): string | undefined {
  const file = join(resolve(settingsDir), CONNSTR_FILE)
  if (!existsSync(file)) return undefined
  const m = /^wss?:\/\/wssk:([0-9a-f]{64})@/.exec(readFileSync(file, "utf8").trim())
  if (!m) throw usage(`${file} is not a WSSK connection string (ws[s]://wssk:<64 hex>@host/wssk/<meter>)`)
  return m[1]
}

/** Registers the meter's link key with the bridge (PUT /meters/:id/link-key); a refusal is a CliError. */
export async function putLinkKey(target: BridgeTarget, meterId: string, keyHex: string) {
  const url = new URL(`meters/${encodeURIComponent(meterId)}/link-key`, target.url)
  const res = await fetch(url, {
    method: "PUT",
    headers: { authorization: `Bearer ${target.token}`, "content-type": "application/json" },
    body: JSON.stringify({ key: keyHex }),
    signal: AbortSignal.timeout(TIMEOUT_MS),
  }).catch((e: Error & { cause?: { message?: string } }) => {
    throw new CliError(`cannot reach the bridge at ${target.url.href}: ${e.cause?.message ?? e.message}`)
  })
  if (res.ok) return
  const body = (await res.json().catch(() => ({}))) as { error?: string; message?: string }
  throw new CliError(
    `the bridge at ${target.url.href} refused the link key of meter ${meterId}: ${res.status} ${body.error ?? ""} ${body.message ?? ""}`.trim(),
  )
}
