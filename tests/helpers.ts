import { randomBytes } from "node:crypto"
import { rmSync } from "node:fs"
import { Writable } from "node:stream"
import pino from "pino"
import { afterAll, beforeAll } from "vitest"
import { openPglite } from "../bridge/src/store/engines.js"
import type { ServiceConfig } from "../bridge/src/config.js"
import type { Store } from "../bridge/src/store/store.js"
import { startService, type Service } from "../bridge/src/service.js"
import { MosquittoProcess } from "../testkit/infra.js"
import { MOSQUITTO_URL, PG_URL, dropSchema } from "../testkit/services.js"

export { MOSQUITTO_URL, PG_URL, dropSchema } from "../testkit/services.js"
export { waitFor } from "../testkit/wait.js"

/** A reading as GET /meters/:id/readings returns it (bridge/src/api.ts readingJson). */
export interface ApiReading {
  ts: string
  intervalS: number
  boot: number
  seq: number
  idx: number
  volumeMl: number
  reverseMl: number
  waterTotalMl: number
  energyWh: number
  energyTotalWh: number
  powerW: number
  voltageDv: number
  pressureMinPa: number
  pressureAvgPa: number
  pressureMaxPa: number
  timeSynced: boolean
  backfill: boolean
  tsEstimated: boolean
  afterReboot: boolean
}

export type StackKind = "mosquitto+postgres" | "embedded"
export const STACKS: StackKind[] = ["mosquitto+postgres", "embedded"]

export const uid = (prefix: string) => `${prefix}-${randomBytes(4).toString("hex")}`

/** An in-memory PGlite store for the tests of the enclosing describe (or file): opened before them, closed after. */
export function pgliteForTests(): () => Store {
  let store: Store | undefined
  beforeAll(async () => {
    store = await openPglite(undefined)
  })
  afterAll(async () => {
    await store?.close()
  })
  return () => store!
}

/** A pino logger whose JSON lines are kept for assertions. */
export function captureLog() {
  const lines: Record<string, unknown>[] = []
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split("\n")) if (l.trim()) lines.push(JSON.parse(l))
      cb()
    },
  })
  return { log: pino({ level: "info" }, stream), lines }
}

export interface TestStack extends Service {
  kind: StackKind
  lines: Record<string, unknown>[]
}

/** The broker and data tier of a stack: embedded (aedes, PGlite in memory) or the machine's real ones. */
export function stackServices(kind: StackKind, schema: string) {
  return kind === "embedded"
    ? { databaseUrl: "pglite:memory", embeddedMqttPort: 0 }
    : { databaseUrl: PG_URL, storeOptions: { schema }, mqttUrl: MOSQUITTO_URL }
}

/**
 * A bridge on the given stack; PostgreSQL runs in a private schema dropped by stop(), Mosquitto as
 * a private process: every bridge subscribes to every meter, so on a shared broker the suites
 * running beside this one would store and ack its frames too (and it theirs). `extra`: more of
 * the service's configuration (API tokens, say).
 */
export async function startStack(kind: StackKind, extra: Partial<ServiceConfig> = {}): Promise<TestStack> {
  const { log, lines } = captureLog()
  const schema = `t_${randomBytes(6).toString("hex")}`
  const broker = kind === "embedded" ? undefined : await MosquittoProcess.create()
  const svc = await startService({
    demo: true,
    ...stackServices(kind, schema),
    ...(broker ? { mqttUrl: broker.url } : {}),
    log,
    clientId: uid("bridge"),
    ...extra,
  })
  return {
    ...svc,
    kind,
    lines,
    stop: async () => {
      await svc.stop()
      await broker?.stop()
      if (broker) rmSync(broker.dir, { recursive: true, force: true })
      if (kind !== "embedded") await dropSchema(schema)
    },
  }
}

/** Every stored reading of a meter through the API, following `next` pages; [] for an unknown meter. */
export async function apiReadings<T = ApiReading>(stack: Service, meterId: string): Promise<T[]> {
  const out: T[] = []
  let after: string | null = null
  do {
    const q: string = after === null ? "" : `?after=${encodeURIComponent(after)}`
    const res = await stack.app.inject({ url: `/meters/${meterId}/readings${q}` })
    if (res.statusCode === 404) return out
    if (res.statusCode !== 200) throw new Error(`readings of ${meterId}: ${res.statusCode} ${res.body}`)
    const page = res.json() as { readings: T[]; next: string | null }
    out.push(...page.readings)
    after = page.next
  } while (after !== null)
  return out
}
