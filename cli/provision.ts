// `citymeter provision`: meter identity, board and broker → the two DeviceScript settings files.
// Non-secrets go to .env.defaults, secrets (MQTT_PASS) to .env.local (mode 0600). `devs build`
// reads both from the directory it runs in (cli/build.ts stages them); the simulator deploys
// the same keys over its settings service (sim/src/meter.ts). With --bridge, the meter is then
// registered with the bridge (PUT /meters/:id), which accepts frames only from registered meters.
import { randomBytes } from "node:crypto"
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { join, resolve } from "node:path"
import { LOCATION_SCHEMA } from "../bridge/src/routes/locations.js"
import { METER_ID_RULE, isMeterId } from "../bridge/src/topics.js"
import { TUNABLES, TUNABLE_BY_NAME, defaults } from "../bridge/src/tunables/schema.js"
import { pulseLimitErrors } from "../bridge/src/tunables/pulse-limits.js"
import { batchSlotError, queueFootprintError } from "../bridge/src/tunables/storage-budget.js"
import type { Tunable, TunableValues } from "../bridge/src/tunables/schema.js"
import { knownBoards, settingsBankBytes, tlsError, unknownBoardMessage } from "./boards.js"
import { CliError, usage } from "./errors.js"

/** DeviceScript settings keys are at most 13 characters (longer ones build, then throw at run time). */
export const MAX_KEY_LENGTH = 13
const KEY_PATTERN = /^[A-Z][A-Z0-9_]*$/

/**
 * Keys `--set` may add on top of the identity and broker settings: the tunables of
 * proto/tunables.json but INTERVAL_S and BATCH, which have their own options.
 */
export const TUNABLE_KEYS: ReadonlyMap<string, Tunable> = new Map(
  TUNABLES.filter((t) => t.key !== "INTERVAL_S" && t.key !== "BATCH").map((t) => [t.key, t]),
)

/** The tunables these settings give the meter (unset ones take their defaults). */
export function tunableValues(s: Settings): TunableValues {
  const v = defaults()
  for (const t of TUNABLES) if (s[t.key] !== undefined) v[t.name] = Number(s[t.key])
  return v
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
  /** The pressure transducer's two-point calibration, "PA:MV,PA:MV" (P_CAL). */
  pressureCal?: string
  /** The metering IC's calibration, "vGainPpm,vOffset,iGainPpm,iOffset,pGainPpm,pOffset" (ADE_CAL). */
  adeCal?: string
  /** Seconds between probes for an ADE7953 that did not answer (ADE_RETRY_S; the firmware's default is 30). */
  adeRetryS?: number
}

/** ADE_RETRY_S bounds, as the firmware checks them (firmware/drivers/ade7953.ts loadProbeRetryMs). */
export const ADE_RETRY_S = { min: 1, max: 3600 }

/**
 * The same bounds as the firmware's (firmware/drivers/pressure.ts pointsError, which refuses and
 * logs anything else at boot): millivolts at the sensor as the meter computes them (its log line
 * "pressure input … mV"), pascals up to the bridge's 50 bar, points at least 100 kPa apart.
 */
export const PRESSURE_CAL = { maxMv: 6000, maxPa: 5_000_000, minSpanPa: 100_000 }

/** --pressure-cal "PA:MV,PA:MV" → P_CAL [mv0, pa0, mv1, pa1], or a usage error saying what is wrong. */
export function pressureCalSetting(raw: string): number[] {
  const m = /^(\d+):(\d+),(\d+):(\d+)$/.exec(raw.replace(/\s+/g, ""))
  if (!m)
    throw usage(
      `--pressure-cal expects two points PA:MV,PA:MV (reference pressure in Pa : the meter's "pressure input" mV), e.g. 0:525,800000:3885 (got '${raw}')`,
    )
  const [pa0, mv0, pa1, mv1] = m.slice(1).map(Number)
  if (mv0 > PRESSURE_CAL.maxMv || mv1 > PRESSURE_CAL.maxMv)
    throw usage(`--pressure-cal: millivolts must be at most ${PRESSURE_CAL.maxMv}`)
  if (pa0 > PRESSURE_CAL.maxPa || pa1 > PRESSURE_CAL.maxPa)
    throw usage(`--pressure-cal: pressures must be at most ${PRESSURE_CAL.maxPa} Pa (50 bar)`)
  if (pa1 - pa0 < PRESSURE_CAL.minSpanPa)
    throw usage(`--pressure-cal: the second pressure must be at least ${PRESSURE_CAL.minSpanPa} Pa above the first`)
  if (mv1 <= mv0) throw usage(`--pressure-cal: the output must rise with pressure (${mv0} mV, then ${mv1} mV)`)
  return [mv0, pa0, mv1, pa1]
}

/** Bounds of ADE_CAL, as the firmware checks them (firmware/drivers/ade7953-calibration.ts trimError). */
export const ADE_CAL = { minGainPpm: 500_000, maxGainPpm: 2_000_000, maxOffset: 1_000_000 }

/** --ade-cal "vGainPpm,vOffset,iGainPpm,iOffset,pGainPpm,pOffset" → ADE_CAL, or a usage error. */
export function adeCalSetting(raw: string): number[] {
  const parts = raw.replace(/\s+/g, "").split(",")
  const v = parts.map(Number)
  if (parts.length !== 6 || !v.every((x, k) => Number.isInteger(x) && /^-?\d+$/.test(parts[k])))
    throw usage(
      `--ade-cal expects six integers vGainPpm,vOffset,iGainPpm,iOffset,pGainPpm,pOffset (gains in ppm, 1000000 = 1; offsets in register counts), got '${raw}'`,
    )
  for (const g of [v[0], v[2], v[4]])
    if (g < ADE_CAL.minGainPpm || g > ADE_CAL.maxGainPpm)
      throw usage(`--ade-cal: gains must be ${ADE_CAL.minGainPpm}..${ADE_CAL.maxGainPpm} ppm (got ${g})`)
  for (const o of [v[1], v[3], v[5]])
    if (Math.abs(o) > ADE_CAL.maxOffset)
      throw usage(`--ade-cal: offsets must be within +-${ADE_CAL.maxOffset} counts (got ${o})`)
  return v
}

export type Settings = Record<string, string | number | number[]>

function intInRange(name: string, raw: string | number, min: number, max: number): number {
  const v = typeof raw === "number" ? raw : Number(raw)
  if (!Number.isInteger(v) || v < min || v > max)
    throw usage(`${name} must be an integer in ${min}..${max} (got ${raw})`)
  return v
}

/** --batch: within the schema's bounds; above them, says why (the frames would outgrow a flash slot). */
function batchOption(raw: number): number {
  const { min, max } = TUNABLE_BY_NAME.batch
  if (Number.isInteger(raw) && raw >= min && raw <= max) return raw
  const why = Number.isInteger(raw) && raw > max ? `: ${batchSlotError(raw)}` : ""
  throw usage(`batch must be an integer in ${min}..${max} (got ${raw})${why}`)
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
  if (!boards.has(i.board)) throw usage(unknownBoardMessage(i.board))
  let url: URL
  try {
    url = new URL(i.broker)
  } catch {
    throw usage(`broker URL '${i.broker}' is not a URL; expected mqtt://host:port or mqtts://host:port`)
  }
  const proto = { "mqtt:": "tcp", "mqtts:": "tls" }[url.protocol]
  if (!proto) throw usage(`broker URL scheme must be mqtt:// or mqtts:// (got ${url.protocol}//)`)
  // issue 20: a Pico W given mqtts:// would never connect
  const noTls = proto === "tls" ? tlsError(i.board) : undefined
  if (noTls) throw usage(noTls)
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
    INTERVAL_S: intInRange("interval", i.intervalS, TUNABLE_BY_NAME.intervalS.min, TUNABLE_BY_NAME.intervalS.max),
    BATCH: batchOption(i.batch),
  }
  const secrets: Settings = {}
  // a random 256-bit key per meter; frames are sealed with it (firmware/seal.ts)
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
    const range = TUNABLE_KEYS.get(key)
    if (!range)
      throw usage(
        `--set ${key}: not a tunable; known: ${[...TUNABLE_KEYS.keys()].join(", ")} (identity, broker, --interval and --batch have their own options)`,
      )
    defaults[key] = intInRange(key, value, range.min, range.max)
  }
  if (i.pressureCal !== undefined) defaults.P_CAL = pressureCalSetting(i.pressureCal)
  if (i.adeCal !== undefined) defaults.ADE_CAL = adeCalSetting(i.adeCal)
  if (i.adeRetryS !== undefined)
    defaults.ADE_RETRY_S = intInRange("ade-retry", i.adeRetryS, ADE_RETRY_S.min, ADE_RETRY_S.max)
  // what the meter could not count or keep is refused here, with the reason
  const pulses = pulseLimitErrors(tunableValues(defaults), i.board)
  if (pulses.length) throw usage(pulses.join("; "))
  const storage = queueFootprintError(i.board, settingsBankBytes(i.board), { ...defaults, ...secrets })
  if (storage) throw usage(storage)
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
export function settingLine(key: string, value: string | number | number[]): string {
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

/** Where a meter is (the bridge's registry, PUT /meters/:id/location). */
export interface Location {
  lat: number
  lon: number
  address?: string
  district?: string
}

/** --lat/--lon/--address/--district: both coordinates or none, in the bounds the bridge checks. */
export function locationOption(o: { lat?: string; lon?: string; address?: string; district?: string }) {
  if (o.lat === undefined && o.lon === undefined) {
    if (o.address || o.district) throw usage("--address and --district need --lat and --lon")
    return undefined
  }
  const { lat: latB, lon: lonB } = LOCATION_SCHEMA.properties
  const deg = (name: string, v: string | undefined, b: { minimum: number; maximum: number }) => {
    const n = Number(v)
    if (v === undefined || !/^-?\d+(\.\d+)?$/.test(v) || n < b.minimum || n > b.maximum)
      throw usage(`--${name} must be decimal degrees in ${b.minimum}..${b.maximum} (got ${v ?? "nothing"})`)
    return n
  }
  return { lat: deg("lat", o.lat, latB), lon: deg("lon", o.lon, lonB), address: o.address, district: o.district }
}

/** Sets the meter's location in the bridge's registry; a refusal or an unreachable bridge is a CliError. */
export async function putLocation(target: BridgeTarget, meterId: string, loc: Location) {
  const url = new URL(`meters/${encodeURIComponent(meterId)}/location`, target.url)
  const res = await fetch(url, {
    method: "PUT",
    headers: { authorization: `Bearer ${target.token}`, "content-type": "application/json" },
    body: JSON.stringify(loc),
    signal: AbortSignal.timeout(REGISTER_TIMEOUT_MS),
  }).catch((e: Error & { cause?: { message?: string } }) => {
    throw new CliError(`cannot reach the bridge at ${target.url.href}: ${e.cause?.message ?? e.message}`)
  })
  if (res.ok) return
  const body = (await res.json().catch(() => ({}))) as { error?: string; message?: string }
  throw new CliError(
    `the bridge at ${target.url.href} refused the location of meter ${meterId}: ${res.status} ${body.error ?? ""} ${body.message ?? ""}`.trim(),
  )
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
