// Bridge ingest: frames/s from the broker to committed rows, against the same broker's delivery rate
// to a subscriber that does nothing — same run, same private Mosquitto (deploy/mosquitto/citymeter.conf).
//
// Each consumer first registers a persistent QoS 1 session and goes away; the frames are published
// into the broker's queue for it; then the consumer reconnects and drains the backlog. The clock
// runs from its CONNACK to the last frame (subscriber: received; bridge: committed and counted by
// citymeter_frames_stored_total), so the publisher never competes with the consumer for the CPU.
import { randomBytes } from "node:crypto"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Writable } from "node:stream"
import mqtt from "mqtt"
import pino from "pino"
import { startBridge } from "../bridge/src/bridge.js"
import { createMetrics } from "../bridge/src/metrics.js"
import { openStore } from "../bridge/src/store/engines.js"
import { upFilter, upTopic } from "../bridge/src/topics.js"
import { MosquittoProcess } from "../tests/infra.js"
import { PG_URL, dropSchema } from "../tests/helpers.js"
import { encodeCitymeter, householdBatch } from "./frames.js"

const silent = pino({ level: "warn" }, new Writable({ write: (_c, _e, cb) => cb() }))

interface Backlog {
  frames: { topic: string; payload: Buffer }[]
}

/** F frames of 4 intervals from M meters (seq 1.. per meter), replayed from their queues. */
function makeBacklog(frames: number, meters: number): Backlog {
  const run = randomBytes(3).toString("hex")
  const perMeter = Math.ceil(frames / meters)
  const out: Backlog["frames"] = []
  const nowS = Math.floor(Date.now() / 1000)
  for (let s = 1; s <= perMeter && out.length < frames; s++)
    for (let m = 0; m < meters && out.length < frames; m++) {
      const b = householdBatch(4, s, nowS - 86400 * 2 + s * 3600)
      out.push({ topic: upTopic(`bench-${run}-${m}`, "readings"), payload: Buffer.from(encodeCitymeter(b, true)) })
    }
  return { frames: out }
}

async function publish(url: string, backlog: Backlog) {
  const pub = await mqtt.connectAsync(url, { clientId: `bench-pub-${randomBytes(3).toString("hex")}` })
  const window = 1000
  for (let i = 0; i < backlog.frames.length; i += window)
    await Promise.all(backlog.frames.slice(i, i + window).map((f) => pub.publishAsync(f.topic, f.payload, { qos: 1 })))
  await pub.endAsync()
}

/** The do-nothing subscriber: persistent session, QoS 1, every message acknowledged at once. */
async function baselineRate(url: string, backlog: Backlog): Promise<number> {
  const clientId = `bench-sub-${randomBytes(3).toString("hex")}`
  const opts = { clientId, clean: false, reconnectPeriod: 0 }
  const first = await mqtt.connectAsync(url, opts)
  await first.subscribeAsync(upFilter(), { qos: 1 })
  await first.endAsync()
  await publish(url, backlog)
  const n = backlog.frames.length
  let got = 0
  let t0 = 0
  const done = new Promise<number>((resolve) => {
    const c = mqtt.connect(url, opts)
    c.on("connect", () => (t0 = performance.now()))
    c.on("message", () => {
      if (++got === n) {
        const s = (performance.now() - t0) / 1000
        c.end(true, () => resolve(n / s))
      }
    })
  })
  return done
}

/** The real bridge (startBridge + store), draining the same backlog into committed rows. */
async function bridgeRate(url: string, databaseUrl: string, backlog: Backlog, schema?: string): Promise<number> {
  const clientId = `bench-bridge-${randomBytes(3).toString("hex")}`
  const store = await openStore(databaseUrl, schema ? { schema } : {})
  try {
    const first = startBridge({
      mqttUrl: url,
      store,
      metrics: createMetrics(),
      log: silent,
      clientId,
      autoRegister: true,
    })
    await first.ready
    await first.stop()
    await publish(url, backlog)
    const metrics = createMetrics()
    let t0 = 0
    const bridge = startBridge({ mqttUrl: url, store, metrics, log: silent, clientId, autoRegister: true }) // bench meters are not provisioned
    bridge.client.once("connect", () => (t0 = performance.now()))
    const n = backlog.frames.length
    for (;;) {
      const stored = (await metrics.framesStored.get()).values.reduce((a, v) => a + v.value, 0)
      if (stored >= n) break
      await new Promise((r) => setTimeout(r, 5))
    }
    const s = (performance.now() - t0) / 1000
    await bridge.stop()
    // every interval of every frame is a committed row
    const meter = backlog.frames[0].topic.split("/")[2]
    const rows = await store.readings(meter, { limit: 100000 })
    const perMeter = backlog.frames.filter((f) => f.topic.split("/")[2] === meter).length
    if (rows.length !== perMeter * 4)
      throw new Error(`expected ${perMeter * 4} rows for ${meter}, found ${rows.length}`)
    return n / s
  } finally {
    await store.close()
  }
}

export interface IngestRow {
  engine: string
  frames: number
  baseline: number
  bridge: number
}

export async function ingestBench(quick: boolean): Promise<IngestRow[]> {
  const frames = quick ? 600 : 20000
  const meters = quick ? 50 : 500
  console.log(
    `\n## bridge ingest (private Mosquitto, backlog of ${frames} frames × 4 intervals from ${meters} meters, QoS 1)`,
  )
  console.log("data tier                    broker → do-nothing subscriber (baseline)  broker → committed rows  ratio")
  const mosq = await MosquittoProcess.create()
  const rows: IngestRow[] = []
  const lite = mkdtempSync(join(tmpdir(), "cm-bench-pglite-"))
  try {
    const engines: [string, string, string | undefined][] = [
      ["PostgreSQL", PG_URL, `bench_${randomBytes(4).toString("hex")}`],
      ["PGlite (file, embedded)", `pglite:${lite}`, undefined],
    ]
    for (const [engine, url, schema] of engines) {
      // baseline and bridge back to back on the same broker, so both see the same machine load
      const baseline = await baselineRate(mosq.url, makeBacklog(frames, meters))
      let bridge: number
      try {
        bridge = await bridgeRate(mosq.url, url, makeBacklog(frames, meters), schema)
      } finally {
        if (schema) await dropSchema(schema)
      }
      rows.push({ engine, frames, baseline, bridge })
      console.log(
        `${engine.padEnd(27)}  ${baseline.toFixed(0).padStart(35)} frames/s  ${bridge.toFixed(0).padStart(14)} frames/s  ${(bridge / baseline).toFixed(3)}`,
      )
    }
  } finally {
    await mosq.stop()
    rmSync(lite, { recursive: true, force: true })
    rmSync(mosq.dir, { recursive: true, force: true })
  }
  return rows
}
