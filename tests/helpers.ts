import { randomBytes } from "node:crypto"
import { Writable } from "node:stream"
import pg from "pg"
import pino from "pino"
import { startService, type Service } from "../bridge/src/service.js"

/** The real services this machine (and CI, via .ci/run) runs. */
export const PG_URL = process.env.TEST_DATABASE_URL ?? "postgres://root@127.0.0.1:5432/test"
export const MOSQUITTO_URL = process.env.TEST_MQTT_URL ?? "mqtt://127.0.0.1:1883"

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
}

export type StackKind = "mosquitto+postgres" | "embedded"
export const STACKS: StackKind[] = ["mosquitto+postgres", "embedded"]

export const uid = (prefix: string) => `${prefix}-${randomBytes(4).toString("hex")}`

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

/** A bridge on the given stack; PostgreSQL runs in a private schema dropped by stop(). */
export async function startStack(kind: StackKind): Promise<TestStack> {
  const { log, lines } = captureLog()
  const schema = `t_${randomBytes(6).toString("hex")}`
  const svc = await startService(
    kind === "embedded"
      ? { demo: true, databaseUrl: "pglite:memory", embeddedMqttPort: 0, log, clientId: uid("bridge") }
      : {
          demo: true,
          databaseUrl: PG_URL,
          storeOptions: { schema },
          mqttUrl: MOSQUITTO_URL,
          log,
          clientId: uid("bridge"),
        },
  )
  return {
    ...svc,
    kind,
    lines,
    stop: async () => {
      await svc.stop()
      if (kind !== "embedded") await dropSchema(schema)
    },
  }
}

export async function dropSchema(schema: string) {
  const c = new pg.Client({ connectionString: PG_URL })
  await c.connect()
  await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
  await c.end()
}

export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 30000,
  stepMs = 100,
): Promise<T> {
  const t0 = Date.now()
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, stepMs))
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
