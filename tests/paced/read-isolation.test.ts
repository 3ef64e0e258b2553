// The load probe of issue 21: a data tier seeded with a city's worth of readings, meters running
// the real firmware bytecode sending a frame a second, and the expensive reads an outsider can send
// fired at once (SensorThings filters and expansions, bulk exports). On both engines:
// - every frame each meter made is committed and acknowledged, none waited for its commit past
//   the bound, none was sent twice (an ack later than the firmware's 8 s resend), no meter lost
//   its connection;
// - every over-budget request gets its 4xx (or is shed with 503), none a 500;
// - the process's RSS stays under a stated cap.
// The paced layer (tests/README.md) runs it alone, after the other layers: the bound is the bridge's.
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { randomBytes } from "node:crypto"
import { monitorEventLoopDelay } from "node:perf_hooks"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { startService, type Service } from "../../bridge/src/service.js"
import type { SqlStore } from "../../bridge/src/store/sql-store.js"
import { SimMeter } from "../../sim/src/meter.js"
import { seedFleet, FLEET_T0 } from "../../testkit/fleet-seed.js"
import { MOSQUITTO_URL, PG_URL, captureLog, dropSchema, uid, waitFor } from "../helpers.js"

const SEED_METERS = 200
const SEED_PER_METER = 480 // 96k readings, 288k Observations (bench:reads runs 3 times as many)
const METERS = 3
const STATEMENT_MS = 1000
/** The longest a frame may wait for its commit while the reads run (see the README's "Reads beside ingest"). */
const BOUND_S = { postgres: 2, pglite: STATEMENT_MS / 1000 + 5 } as const
/** RSS growth allowed over the process's size before the storm. */
const RSS_CAP_MB = 768

const sta = (q: string) => `/sta/v1.1/${q.replace(/ /g, "%20").replace(/'/g, "%27")}`
const month = FLEET_T0.slice(0, 7)
/** The expensive reads: each answers 200, 400 CM_ERR_READ_BUDGET or 503 CM_ERR_BUSY, never a 500. */
const STORM = [
  ...Array(5).fill(sta("Observations?$filter=Datastream/Thing/properties/district eq 'x'&$top=1")),
  sta("Things?$top=250&$filter=startswith(name,'fle')&$expand=Datastreams($expand=Observations($top=10000))"),
  sta("Observations?$filter=result gt -1 and hour(phenomenonTime) eq 25&$count=true&$top=1"),
  sta("Observations?$orderby=result desc&$top=10000"),
  ...Array(3).fill(`/export/readings/${month}.csv`), // one more than EXPORT_CONCURRENCY: one waits
]
/** Of those, the ones no budget lets through. */
const OVER_BUDGET = new Set([STORM[5]])

describe.each(["postgres", "pglite"] as const)("reads beside ingest on %s", (engine) => {
  let svc: Service
  const meters: SimMeter[] = []
  const schema = `t_${randomBytes(6).toString("hex")}`
  const { log, lines } = captureLog()
  beforeAll(async () => {
    svc = await startService({
      demo: true,
      log,
      clientId: uid("bridge"),
      httpPort: 0,
      reads: { statementMs: STATEMENT_MS },
      ...(engine === "postgres"
        ? { databaseUrl: PG_URL, storeOptions: { schema }, mqttUrl: MOSQUITTO_URL }
        : { databaseUrl: `pglite:${join(mkdtempSync(join(tmpdir(), "cm-probe-")), "db")}`, embeddedMqttPort: 0 }),
    })
    await seedFleet(svc.store, SEED_METERS, SEED_PER_METER)
    await (svc.store as SqlStore).db.query(`CHECKPOINT`)
    const url = new URL(svc.mqttUrl)
    for (let i = 0; i < METERS; i++) {
      const m = new SimMeter({
        meterId: uid("probe"),
        water: "register",
        settings: { MQTT_HOST: url.hostname, MQTT_PORT: Number(url.port), INTERVAL_S: 1, BATCH: 1 },
      })
      meters.push(m)
      await m.start()
    }
    for (const m of meters) await m.waitForLine(/citymeter: connected/, 60_000)
  }, 240_000)
  afterAll(async () => {
    for (const m of meters) await m.stop()
    await svc?.stop()
    if (engine === "postgres") await dropSchema(schema)
  })

  test("every frame committed and acked within the bound while the worst reads run; each over-budget read gets its 4xx", async () => {
    const storedBefore = await Promise.all(meters.map((m) => frames(m)))
    const rss0 = process.memoryUsage().rss
    let rssMax = rss0
    let waitMax = 0
    let healthMaxMs = 0
    const sampler = setInterval(() => {
      rssMax = Math.max(rssMax, process.memoryUsage().rss)
      waitMax = Math.max(waitMax, svc.ingestHealth!().oldestUnackedS)
    }, 50)
    const health = setInterval(() => {
      const t = performance.now()
      void fetch(`${svc.httpUrl}/healthz`).then(
        () => (healthMaxMs = Math.max(healthMaxMs, performance.now() - t)),
        () => {},
      )
    }, 250)
    const loop = monitorEventLoopDelay({ resolution: 10 })
    loop.enable()
    const t0 = performance.now()
    const answers = await Promise.all(
      STORM.map(async (path) => {
        const res = await fetch(`${svc.httpUrl}${path}`)
        const body = await res.text() // exports stream to the end
        return {
          path,
          status: res.status,
          bytes: body.length,
          error: res.status === 200 ? undefined : JSON.parse(body).error,
        }
      }),
    )
    const stormS = (performance.now() - t0) / 1000
    // the meters go on for a few frames after the storm: all of them must be in
    await new Promise((r) => setTimeout(r, 3000))
    clearInterval(sampler)
    clearInterval(health)
    loop.disable()
    const reopened = lines.filter((l) => l.msg === "embedded database reopened").map((l) => l.awayMs)
    console.log(
      `${engine}: storm ${stormS.toFixed(1)} s; longest wait for a commit ${waitMax.toFixed(2)} s; ` +
        `/healthz worst ${healthMaxMs.toFixed(0)} ms; event loop blocked ≤ ${(loop.max / 1e6).toFixed(0)} ms; ` +
        `database reopened after ${JSON.stringify(reopened)} ms; RSS +${((rssMax - rss0) / 2 ** 20).toFixed(0)} MB; ` +
        answers.map((a) => `${a.status}${a.error ? ` ${a.error}` : ""} ${a.bytes} B`).join(" | "),
    )
    for (const a of answers) {
      expect([200, 400, 503], `${a.path}: ${a.status} ${a.error}`).toContain(a.status)
      if (a.status === 400) expect(a.error).toBe("CM_ERR_READ_BUDGET")
      if (a.status === 503) expect(a.error).toBe("CM_ERR_BUSY")
      if (OVER_BUDGET.has(a.path)) expect(a.status, a.path).toBe(400)
    }
    // the exports that ran are whole: a header and every seeded reading of the month
    for (const a of answers.filter((x) => x.path.startsWith("/export/") && x.status === 200))
      expect(a.bytes).toBeGreaterThan(SEED_METERS * SEED_PER_METER * 50)
    expect(waitMax).toBeLessThan(BOUND_S[engine])
    expect(rssMax - rss0).toBeLessThan(RSS_CAP_MB * 2 ** 20)
    // every frame a meter made is stored, each sent once (no resend: every ack came in time)
    await waitFor("every frame made is stored", async () => {
      for (const m of meters) if ((await frames(m)) < made(m)) return false
      return true
    })
    const duplicates = await svc.metrics.registry.getSingleMetricAsString("citymeter_frames_duplicate_total")
    expect(duplicates).not.toMatch(/citymeter_frames_duplicate_total(\{[^}]*\})? [1-9]/)
    for (const [i, m] of meters.entries()) {
      expect(await frames(m)).toBeGreaterThan(storedBefore[i] + stormS * 0.5)
      expect(m.lines.filter((l) => l.includes("citymeter: connected"))).toHaveLength(1)
    }
  }, 240_000)

  /** Frames the firmware says it made. */
  const made = (m: SimMeter) => m.lines.filter((l) => l.includes("citymeter: frame ")).length
  /** Frames the data tier holds for a meter (one reading each: BATCH 1). */
  const frames = async (m: SimMeter) => {
    const { rows } = await (svc.store as SqlStore).db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM readings WHERE meter_id = $1`,
      [m.meterId],
    )
    return rows[0].n
  }
})
