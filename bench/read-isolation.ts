// Reads beside ingest (issue 21), `npm run bench:reads`: one bridge service per engine (PostgreSQL
// with Mosquitto; the embedded defaults: PGlite on disk with the embedded broker), its data tier
// seeded with 300 meters × 960 readings (864k Observations). Ingest runs at a steady 1,000
// frames/s twice in the same run: alone (the baseline), then while 5 clients send the worst reads
// an outsider can send, each again as soon as it is answered. Reported: publish → commit and
// publish → ack p50/p99/max of both phases and their ratio, the answers the reads got, the worst
// /healthz answer time and the process's peak RSS.
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { randomBytes } from "node:crypto"
import { Writable } from "node:stream"
import pino from "pino"
import { startService, type Service } from "../bridge/src/service.js"
import type { SqlStore } from "../bridge/src/store/sql-store.js"
import { FLEET_T0, seedFleet } from "../testkit/fleet-seed.js"
import { MosquittoProcess } from "../testkit/infra.js"
import { PG_URL, dropSchema } from "../testkit/services.js"
import { steadyLoad } from "./ingest.js"

const quick = process.argv.includes("--quick")
const SECONDS = quick ? 5 : 15
const READERS = 5
const sta = (q: string) => `/sta/v1.1/${q.replace(/ /g, "%20").replace(/'/g, "%27")}`
/** The worst reads of issue 21 (the expansion bomb, filters across relations, full scans, a month's export). */
const WORST = [
  sta("Observations?$filter=Datastream/Thing/properties/district eq 'x'&$top=1"),
  sta("Things?$top=250&$filter=startswith(name,'fle')&$expand=Datastreams($expand=Observations($top=10000))"),
  sta("Observations?$filter=result gt -1 and hour(phenomenonTime) eq 25&$count=true&$top=1"),
  sta("Observations?$orderby=result desc&$top=10000"),
  `/export/readings/${FLEET_T0.slice(0, 7)}.csv`,
]

const silent = pino({ level: "warn" }, new Writable({ write: (_c, _e, cb) => cb() }))
const ms = (x: number) => x.toFixed(0).padStart(6)

async function measure(engine: "PostgreSQL" | "PGlite") {
  const schema = `bench_${randomBytes(4).toString("hex")}`
  const dir = mkdtempSync(join(tmpdir(), "cm-bench-reads-"))
  const mosq = engine === "PostgreSQL" ? await MosquittoProcess.create() : undefined
  const svc: Service = await startService({
    demo: true,
    log: silent,
    httpPort: 0,
    ...(mosq
      ? { databaseUrl: PG_URL, storeOptions: { schema }, mqttUrl: mosq.url }
      : { databaseUrl: `pglite:${join(dir, "db")}`, embeddedMqttPort: 0 }),
  })
  try {
    await seedFleet(svc.store, 300, 960)
    await (svc.store as SqlStore).db.query(`CHECKPOINT`)
    const alone = await steadyLoad(svc.mqttUrl, svc.bridge!, SECONDS)
    // the readers: each sends the worst reads in turn until ingest's phase is over
    let running = true
    const answers = new Map<string, number>()
    let healthMax = 0
    let rssMax = process.memoryUsage().rss
    const sampler = setInterval(() => {
      rssMax = Math.max(rssMax, process.memoryUsage().rss)
      const t = performance.now()
      void fetch(`${svc.httpUrl}/healthz`).then(
        () => (healthMax = Math.max(healthMax, performance.now() - t)),
        () => {},
      )
    }, 100)
    const readers = Array.from({ length: READERS }, async (_, r) => {
      for (let i = r; running; i++) {
        const res = await fetch(`${svc.httpUrl}${WORST[i % WORST.length]}`)
        await res.arrayBuffer()
        const key = `${res.status}`
        answers.set(key, (answers.get(key) ?? 0) + 1)
      }
    })
    const busy = await steadyLoad(svc.mqttUrl, svc.bridge!, SECONDS)
    running = false
    await Promise.all(readers)
    clearInterval(sampler)
    const row = (name: string, a: typeof alone) =>
      `| ${engine} | ${name} | ${ms(a.commit.p50)} | ${ms(a.commit.p99)} | ${ms(a.commit.max)} | ${ms(a.ack.p99)} | ${a.commit.n}/${a.frames} |`
    console.log(row("ingest alone", alone))
    console.log(row(`with ${READERS} worst reads`, busy))
    console.log(
      `| ${engine} | ratio p99 (with reads / alone) | | ${(busy.commit.p99 / alone.commit.p99).toFixed(1)} | | ${(busy.ack.p99 / alone.ack.p99).toFixed(1)} | |`,
    )
    console.log(
      `  ${engine}: reads answered ${JSON.stringify(Object.fromEntries(answers))}; /healthz worst ${healthMax.toFixed(0)} ms; ` +
        `peak RSS ${(rssMax / 2 ** 20).toFixed(0)} MB`,
    )
  } finally {
    await svc.stop()
    await mosq?.stop()
    if (mosq) rmSync(mosq.dir, { recursive: true, force: true })
    if (engine === "PostgreSQL") await dropSchema(schema)
    rmSync(dir, { recursive: true, force: true })
  }
}

console.log(`\n## Reads beside ingest: 1,000 frames/s for ${SECONDS} s, alone and with ${READERS} worst-case readers`)
console.log("| engine | phase | commit p50 ms | commit p99 ms | commit max ms | ack p99 ms | committed |")
console.log("|---|---|--:|--:|--:|--:|--:|")
await measure("PostgreSQL")
await measure("PGlite")
