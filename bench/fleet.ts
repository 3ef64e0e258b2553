// Fleet scale: N fleet meters (sim/src/fleet.ts, pooled connections) publish one
// readings frame each to a running bridge (its own process, PostgreSQL, demo registry: every
// meter is new, so each frame also registers its meter). Measured: publish of the first frame →
// the last one committed; then the data tier is checked for exactly once (one ledger row and
// `batch` readings per meter, every meter registered, no dead letter). The same with the load
// spread over bridge processes on an MQTT 5 shared subscription, same run, same broker.
import { randomBytes } from "node:crypto"
import { readFileSync, rmSync } from "node:fs"
import pg from "pg"
import { Fleet } from "../sim/src/fleet.js"
import { BridgeProcess, MosquittoProcess } from "../testkit/infra.js"
import { PG_URL, dropSchema } from "../testkit/services.js"

const hex = () => randomBytes(3).toString("hex")

export interface FleetResult {
  meters: number
  processes: number
  seconds: number
  rate: number
  /** Bridge processes' CPU, user + system, per frame (µs), from /proc. */
  cpuUsPerFrame: number
}

/** CPU time (user + system) of a process so far, µs (/proc/<pid>/stat, clock ticks of 10 ms). */
export function cpuUs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  // fields 14 and 15 (utime, stime), counted from the state field (3)
  return (Number(f[11]) + Number(f[12])) * 10_000
}

export async function fleetRun(mosq: MosquittoProcess, meters: number, processes: number): Promise<FleetResult> {
  const schema = `bench_${hex()}`
  const run = hex()
  const env = (i: number) => ({
    MQTT_URL: mosq.url,
    DATABASE_URL: PG_URL,
    DATABASE_SCHEMA: schema,
    MQTT_CLIENT_ID: `bench-fleet-${run}-${i}`,
    CITYMETER_MODE: "demo",
    LOG_LEVEL: "warn",
    ...(processes > 1 ? { MQTT_SHARE_GROUP: `fleet-${run}` } : {}),
  })
  const bridges = Array.from({ length: processes }, (_, i) => new BridgeProcess(env(i)))
  const db = new pg.Client({ connectionString: PG_URL })
  const fleet = new Fleet({ mqttUrl: mosq.url, meters, prefix: `fleet-${run}`, mode: "pooled", pool: 4 })
  try {
    // one at a time: the first creates the schema
    for (const b of bridges) await b.start()
    await db.connect()
    await fleet.connect()
    const count = async () =>
      Number((await db.query<{ n: string }>(`SELECT count(*) AS n FROM ${schema}.frames`)).rows[0].n)
    const cpu0 = bridges.map((b) => cpuUs(b.pid!))
    const t0 = performance.now()
    await fleet.sendRound()
    while ((await count()) < meters) await new Promise((r) => setTimeout(r, 100))
    const seconds = (performance.now() - t0) / 1000
    const cpu1 = bridges.map((b) => cpuUs(b.pid!))
    // exactly once: a ledger row per meter, `batch` readings per meter, every meter registered, nothing dead-lettered
    await new Promise((r) => setTimeout(r, 500))
    const q = async (sql: string) => Number((await db.query<{ n: string }>(sql)).rows[0].n)
    const frames = await count()
    const readings = await q(`SELECT count(*) AS n FROM ${schema}.readings`)
    const perMeter = await q(
      `SELECT count(*) AS n FROM (SELECT meter_id FROM ${schema}.readings GROUP BY meter_id HAVING count(*) = ${fleet.batch}) m`,
    )
    const registered = await q(`SELECT count(*) AS n FROM ${schema}.meters`)
    const dead = await q(`SELECT count(*) AS n FROM ${schema}.dead_letters`)
    if (frames !== meters || readings !== meters * fleet.batch || perMeter !== meters || registered !== meters || dead)
      throw new Error(
        `fleet of ${meters}: ${frames} frames, ${readings} readings (${perMeter} meters with ${fleet.batch}), ${registered} meters, ${dead} dead letters`,
      )
    const cpu = cpu1.reduce((a, c, i) => a + c - cpu0[i], 0)
    return { meters, processes, seconds, rate: meters / seconds, cpuUsPerFrame: cpu / meters }
  } finally {
    await fleet.close().catch(() => {})
    for (const b of bridges) await b.stop()
    await db.end().catch(() => {})
    await dropSchema(schema)
  }
}

const fmt = (n: number) => Math.round(n).toLocaleString("en-US")

export async function fleetBench(quick: boolean): Promise<FleetResult[]> {
  const meters = quick ? 500 : 100_000
  console.log(
    `\n## fleet: ${fmt(meters)} fleet meters × one 4-interval frame (4 pooled connections, QoS 1) → bridge process(es) → PostgreSQL`,
  )
  const mosq = await MosquittoProcess.create()
  const out: FleetResult[] = []
  try {
    for (const processes of quick ? [1] : [1, 2]) {
      const r = await fleetRun(mosq, meters, processes)
      out.push(r)
      console.log(
        `${processes} bridge process${processes > 1 ? "es (MQTT 5 shared subscription)" : ""}: ${fmt(meters)} frames stored exactly once in ${r.seconds.toFixed(1)} s (${fmt(r.rate)} frames/s, publish → last commit); bridge CPU ${r.cpuUsPerFrame.toFixed(0)} µs/frame`,
      )
    }
  } finally {
    await mosq.stop()
    rmSync(mosq.dir, { recursive: true, force: true })
  }
  return out
}
