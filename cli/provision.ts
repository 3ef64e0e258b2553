// `citymeter provision`: meter identity, board and broker → the two DeviceScript settings files.
// Non-secrets go to .env.defaults, secrets (MQTT_PASS) to .env.local (mode 0600). `devs build`
// reads both from the directory it runs in (cli/firmware.ts stages them); the simulator deploys
// the same keys over its settings service (sim/src/meter.ts). With --bridge, the meter is then
// registered with the bridge (PUT /meters/:id), which accepts frames only from registered meters.
import { randomBytes } from "node:crypto"
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { join, resolve } from "node:path"
import { METER_ID_RULE, isMeterId } from "../bridge/src/topics.js"
import { knownBoards } from "./boards.js"
import { CliError, usage } from "./errors.js"

/** DeviceScript settings keys are at most 13 characters (longer ones build, then throw at run time). */
export const MAX_KEY_LENGTH = 13
const KEY_PATTERN = /^[A-Z][A-Z0-9_]*$/

/** Keys `--set` may add on top of the identity and broker settings (firmware/config.ts TUNABLES). */
export const TUNABLE_KEYS: Record<string, { min: number; max: number }> = {
  LEAK_S: { min: 1, max: 30 * 86400 },
  BURST_MLMIN: { min: 1, max: 10_000_000 },
  BACKFLOW_ML: { min: 1, max: 10_000_000 },
  NO_FLOW_S: { min: 0, max: 365 * 86400 },
  P_LOW_PA: { min: 0, max: 10_000_000 },
  P_HIGH_PA: { min: 1, max: 10_000_000 },
  UNDERVOLT_DV: { min: 0, max: 10_000 },
  SUPLOSS_DV: { min: 0, max: 10_000 },
  PULSES_PER_L: { min: 1, max: 100_000 },
  IMP_PER_KWH: { min: 1, max: 100_000 },
  MAX_FLOW_LMIN: { min: 1, max: 100_000 },
  MAX_POWER_W: { min: 1, max: 1_000_000 },
}

/**
 * Pulse inputs are polled every 100 ms: at most 5 pulses/s count (firmware/config.ts
 * pulseLimitError, the same rule). Defaults: 1 pulse/L at 50 L/min, 1000 imp/kWh at 11 kW.
 */
export function pulseLimitError(s: Settings): string | undefined {
  const k = Number(s.PULSES_PER_L ?? 1)
  const flow = Number(s.MAX_FLOW_LMIN ?? 50)
  if ((k * flow) / 60 > 5)
    return `PULSES_PER_L=${k} at MAX_FLOW_LMIN=${flow} is ${((k * flow) / 60).toFixed(1)} pulses/s; GPIO inputs are polled every 100 ms, so at most 5 pulses/s count (max ${(300 / k).toFixed(2)} L/min at this constant)`
  const imp = Number(s.IMP_PER_KWH ?? 1000)
  const w = Number(s.MAX_POWER_W ?? 11000)
  if ((imp * w) / 3.6e6 > 5)
    return `IMP_PER_KWH=${imp} at MAX_POWER_W=${w} is ${((imp * w) / 3.6e6).toFixed(1)} impulses/s; GPIO inputs are polled every 100 ms, so at most 5/s count (max ${Math.floor(1.8e7 / imp)} W at this constant)`
  return undefined
}

export interface ProvisionInput {
  meterId: string
  board: string
  broker: string
  username?: string
  password?: string
  intervalS: number
  batch: number
  /** Extra settings, KEY=VALUE. */
  set?: string[]
  /** A legacy or demo meter: no sealing key (frames travel open; the bridge's policy must be open). */
  open?: boolean
}

export type Settings = Record<string, string | number>

function intInRange(name: string, raw: string | number, min: number, max: number): number {
  const v = typeof raw === "number" ? raw : Number(raw)
  if (!Number.isInteger(v) || v < min || v > max)
    throw usage(`${name} must be an integer in ${min}..${max} (got ${raw})`)
  return v
}

/** Characters a DeviceScript .env value cannot carry: '#' starts a comment, lines end at a break. */
function checkValue(key: string, value: string) {
  if (/[#\r\n]/.test(value))
    throw usage(`${key} must not contain '#' or line breaks (DeviceScript .env files cut values there)`)
}

/** Validates the input; returns the settings, non-secret and secret, in file order. */
export function buildSettings(i: ProvisionInput): { defaults: Settings; secrets: Settings } {
  if (!isMeterId(i.meterId)) throw usage(`meter id '${i.meterId}' is not valid: ${METER_ID_RULE}`)
  const boards = knownBoards()
  if (!boards.has(i.board))
    throw usage(
      `unknown board '${i.board}': use one of ${[...boards].sort().join(", ")} (or add boards/${i.board}.board.json)`,
    )
  let url: URL
  try {
    url = new URL(i.broker)
  } catch {
    throw usage(`broker URL '${i.broker}' is not a URL; expected mqtt://host:port or mqtts://host:port`)
  }
  const proto = { "mqtt:": "tcp", "mqtts:": "tls" }[url.protocol]
  if (!proto) throw usage(`broker URL scheme must be mqtt:// or mqtts:// (got ${url.protocol}//)`)
  if (!url.hostname) throw usage(`broker URL '${i.broker}' has no host`)
  if (url.pathname && url.pathname !== "/") throw usage(`broker URL must not have a path (got ${url.pathname})`)
  if (url.username || url.password)
    throw usage("put credentials in --username/--password, not in the broker URL (the URL is not secret)")
  const port = url.port ? Number(url.port) : proto === "tls" ? 8883 : 1883
  const defaults: Settings = {
    METER_ID: i.meterId,
    BOARD: i.board,
    MQTT_HOST: url.hostname.replace(/^\[|\]$/g, ""),
    MQTT_PORT: port,
    MQTT_PROTO: proto,
    MQTT_USER: i.username ?? "",
    INTERVAL_S: intInRange("interval", i.intervalS, 1, 86400),
    BATCH: intInRange("batch", i.batch, 1, 8),
  }
  const secrets: Settings = {}
  // issue 10: a random 256-bit key per meter; frames are sealed with it (firmware/seal.ts)
  if (!i.open) secrets.SEAL_KEY = randomBytes(32).toString("hex")
  if (i.password !== undefined && i.password !== "") {
    if (!i.username) throw usage("a password needs a --username")
    secrets.MQTT_PASS = i.password
  }
  for (const kv of i.set ?? []) {
    const eq = kv.indexOf("=")
    if (eq < 1) throw usage(`--set expects KEY=VALUE (got '${kv}')`)
    const key = kv.slice(0, eq)
    const value = kv.slice(eq + 1)
    if (key.length > MAX_KEY_LENGTH)
      throw usage(`setting key ${key} is ${key.length} characters; DeviceScript allows at most ${MAX_KEY_LENGTH}`)
    if (!KEY_PATTERN.test(key)) throw usage(`setting key ${key} must be upper case letters, digits and '_'`)
    const range = TUNABLE_KEYS[key]
    if (!range)
      throw usage(
        `--set ${key}: not a tunable; known: ${Object.keys(TUNABLE_KEYS).join(", ")} (identity and broker have their own options)`,
      )
    defaults[key] = intInRange(key, value, range.min, range.max)
  }
  const pulses = pulseLimitError(defaults)
  if (pulses) throw usage(pulses)
  for (const [k, v] of Object.entries({ ...defaults, ...secrets })) {
    if (k.length > MAX_KEY_LENGTH) throw usage(`setting key ${k} is longer than ${MAX_KEY_LENGTH} characters`)
    if (typeof v === "string") checkValue(k, v)
  }
  return { defaults, secrets }
}

/**
 * One `KEY=value` line as DeviceScript reads it: the value is JSON when it parses as JSON. Strings
 * are written JSON-quoted so that a password "1234" stays a string; no spaces around '='
 * (DeviceScript keeps them as part of the key).
 */
export function settingLine(key: string, value: string | number): string {
  return `${key}=${JSON.stringify(value)}`
}

export function renderEnv(header: string[], settings: Settings): string {
  return (
    [...header.map((l) => `# ${l}`), ...Object.entries(settings).map(([k, v]) => settingLine(k, v))].join("\n") + "\n"
  )
}

export interface ProvisionResult {
  dir: string
  defaultsFile: string
  localFile: string
  defaults: Settings
  secrets: Settings
}

export function provision(i: ProvisionInput, outDir: string, force = false): ProvisionResult {
  const { defaults, secrets } = buildSettings(i)
  const dir = resolve(outDir)
  const defaultsFile = join(dir, ".env.defaults")
  const localFile = join(dir, ".env.local")
  for (const f of [defaultsFile, localFile])
    if (existsSync(f) && !force) throw usage(`${f} exists; pass --force to overwrite it`)
  mkdirSync(dir, { recursive: true })
  const stamp = `written by citymeter provision for meter ${i.meterId}`
  writeFileSync(
    defaultsFile,
    renderEnv(["citymeter meter settings (DeviceScript; keys <= 13 characters)", stamp], defaults),
  )
  writeFileSync(localFile, renderEnv(["citymeter meter secrets: never commit this file", stamp], secrets), {
    mode: 0o600,
  })
  chmodSync(localFile, 0o600)
  return { dir, defaultsFile, localFile, defaults, secrets }
}

/**
 * The shipped ACL (deploy/mosquitto/acl, bridge/src/acl.ts) lets a login publish only under its own
 * name: `pattern write citymeter/v1/%u/up/#`. Another username provisions a meter the broker refuses.
 */
export function usernameWarning(i: Pick<ProvisionInput, "meterId" | "username">): string | undefined {
  if (!i.username || i.username === i.meterId) return undefined
  return (
    `--username '${i.username}' differs from the meter id '${i.meterId}': the shipped broker ACL ` +
    "(deploy/mosquitto/acl) lets a meter publish only when its username is its meter id"
  )
}

export interface BridgeTarget {
  /** The bridge's HTTP API, e.g. https://bridge.city.example/ */
  url: URL
  token: string
}

/** Checks --bridge and the token before anything is written. */
export function bridgeTarget(bridge: string, token: string | undefined): BridgeTarget {
  let url: URL
  try {
    url = new URL(bridge)
  } catch {
    throw usage(`bridge URL '${bridge}' is not a URL; expected http://host:port or https://host:port`)
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    throw usage(`bridge URL scheme must be http:// or https:// (got ${url.protocol}//)`)
  if (url.username || url.password) throw usage("put the API token in --token or CITYMETER_API_TOKEN, not in the URL")
  if (url.search || url.hash) throw usage(`bridge URL must not have a query or fragment (got ${bridge})`)
  if (!token) throw usage("--bridge needs the bridge's API token: --token, or CITYMETER_API_TOKEN in the environment")
  if (!url.pathname.endsWith("/")) url.pathname += "/"
  return { url, token }
}

const REGISTER_TIMEOUT_MS = 10_000

/**
 * Registers the meter with the bridge (PUT /meters/:id). Returns whether it was new; a refusal or
 * an unreachable bridge is a CliError with one line saying which.
 */
export async function registerMeter(
  target: BridgeTarget,
  meterId: string,
  sealKey: string | undefined,
): Promise<{ created: boolean }> {
  const url = new URL(`meters/${encodeURIComponent(meterId)}`, target.url)
  let res: Response
  try {
    res = await fetch(url, {
      method: "PUT",
      headers: { authorization: `Bearer ${target.token}`, "content-type": "application/json" },
      body: JSON.stringify(sealKey ? { policy: "sealed", key: sealKey } : { policy: "open" }),
      signal: AbortSignal.timeout(REGISTER_TIMEOUT_MS),
    })
  } catch (e) {
    const err = e as Error & { cause?: { message?: string } }
    const why =
      err.name === "TimeoutError"
        ? `no answer within ${REGISTER_TIMEOUT_MS / 1000} s`
        : (err.cause?.message ?? err.message)
    throw new CliError(`cannot reach the bridge at ${target.url.href} to register meter ${meterId}: ${why}`)
  }
  const text = await res.text()
  let body: { error?: string; message?: string; meterId?: string } = {}
  try {
    body = JSON.parse(text)
  } catch {
    // not our API: described by its status below
  }
  if ((res.status === 200 || res.status === 201) && body.meterId === meterId) return { created: res.status === 201 }
  if (res.ok)
    throw new CliError(
      `${target.url.href} answered ${res.status} but not as a citymeter bridge: is --bridge the bridge's HTTP API?`,
    )
  const detail = body.error ? `${body.error}: ${body.message}` : text.slice(0, 200).replace(/\s+/g, " ")
  throw new CliError(`the bridge at ${target.url.href} refused to register meter ${meterId}: ${res.status} ${detail}`)
}

/** The sealing key a provisioned meter's .env.local holds (SEAL_KEY), or undefined for an open meter. */
export function readSealKey(settingsDir: string): string | undefined {
  const file = join(resolve(settingsDir), ".env.local")
  if (!existsSync(file)) throw usage(`${file} does not exist: provision the meter first (citymeter provision)`)
  const m = /^SEAL_KEY=(.*)$/m.exec(readFileSync(file, "utf8"))
  if (!m) return undefined
  const key = JSON.parse(m[1]) as string
  if (!/^[0-9a-f]{64}$/.test(key)) throw usage(`SEAL_KEY in ${file} is not 64 hex digits`)
  return key
}
