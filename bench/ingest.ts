// Bridge ingest against the same broker's delivery to a subscriber that does nothing — same run,
// same private Mosquitto (deploy/mosquitto/citymeter.conf). Three measures (bench/README.md):
//
// 1. Drain rate. Each consumer first registers a persistent QoS 1 session and goes away; the
//    frames are published into the broker's queue for it; then the consumer reconnects and drains
//    the backlog. The clock runs from its CONNACK to the last frame (subscriber: received; bridge:
//    committed and counted by citymeter_frames_stored_total), so the publisher never competes with
//    the consumer for the CPU. PostgreSQL, PGlite on disk as the embedded default runs it (fsync
//    at each commit), and PGlite as it ships (fsync off): the last two rows price durability.
// 2. Latency at a steady 1,000 frames/s: publish → commit (the bridge's ingest resolves) and
//    publish → the meter's down/ack, p50 and p99.
// 3. Memory with a backlog of 1M frames (full run only): the bridge as its own process drains a
//    session holding 1M frames; its peak RSS (VmHWM) and rate.
import { randomBytes } from "node:crypto"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Writable } from "node:stream"
import mqtt from "mqtt"
import pg from "pg"
import pino from "pino"
import { startBridge, type Bridge } from "../bridge/src/bridge.js"
import { citymeter } from "../bridge/src/gen/citymeter.js"
import { createMetrics } from "../bridge/src/metrics.js"
import { openStore, type StoreOptions } from "../bridge/src/store/engines.js"
import type { Store } from "../bridge/src/store/store.js"
import { upFilter, upTopic } from "../bridge/src/topics.js"
import { BridgeProcess, MosquittoProcess } from "../testkit/infra.js"
import { PG_URL, dropSchema } from "../testkit/services.js"
import { encodeCitymeter, householdBatch } from "./frames.js"

const silent = pino({ level: "warn" }, new Writable({ write: (_c, _e, cb) => cb() }))
const hex = () => randomBytes(3).toString("hex")

interface Frame {
  topic: string
  payload: Buffer
}

/**
 * Frame i of a backlog from `meters` meters: seq 1.. per meter, 4 intervals, replayed from the
 * meter's queue; meter after meter, so consecutive frames belong to different meters.
 */
export function backlogFrame(run: string, i: number, meters: number, nowS: number): Frame {
  const m = i % meters
  const s = Math.floor(i / meters) + 1
  const b = householdBatch(4, s, nowS - 86400 * 2 + s * 3600)
  return { topic: upTopic(`bench-${run}-${m}`, "readings"), payload: Buffer.from(encodeCitymeter(b, true)) }
}

/** Publishes frames 0..n-1 at QoS 1 with up to 1000 in flight. */
export async function publish(url: string, n: number, frame: (i: number) => Frame) {
  const pub = await mqtt.connectAsync(url, { clientId: `bench-pub-${hex()}` })
  const window = 1000
  for (let i = 0; i < n; i += window) {
    const sends: Promise<unknown>[] = []
    for (let j = i; j < Math.min(n, i + window); j++) {
      const f = frame(j)
      sends.push(pub.publishAsync(f.topic, f.payload, { qos: 1 }))
    }
    await Promise.all(sends)
  }
  await pub.endAsync()
}

/**
 * Makes the bridge's persistent session on the broker (connect once, subscribe, leave), then
 * publishes the backlog into it: what a bridge that comes back after an outage finds waiting.
 */
export async function backlogForBridge(
  url: string,
  store: Store,
  clientId: string,
  n: number,
  frame: (i: number) => Frame,
) {
  // bench meters are not provisioned: demo registry
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
  await publish(url, n, frame)
}

/** The do-nothing subscriber: persistent session, QoS 1, every message acknowledged at once. */
async function baselineRate(url: string, n: number, frame: (i: number) => Frame): Promise<number> {
  const clientId = `bench-sub-${hex()}`
  const opts = { clientId, clean: false, reconnectPeriod: 0 }
  const first = await mqtt.connectAsync(url, opts)
  await first.subscribeAsync(upFilter(), { qos: 1 })
  await first.endAsync()
  await publish(url, n, frame)
  let got = 0
  let t0 = 0
  return new Promise<number>((resolve) => {
    const c = mqtt.connect(url, opts)
    c.on("connect", () => (t0 = performance.now()))
    c.on("message", () => {
      if (++got === n) {
        const s = (performance.now() - t0) / 1000
        c.end(true, () => resolve(n / s))
      }
    })
  })
}

const storedFrames = async (m: ReturnType<typeof createMetrics>) =>
  (await m.framesStored.get()).values.reduce((a, v) => a + v.value, 0)

/** The real bridge (startBridge + store), draining the same backlog into committed rows. */
async function bridgeRate(
  url: string,
  databaseUrl: string,
  storeOptions: StoreOptions,
  n: number,
  meters: number,
  frame: (i: number) => Frame,
): Promise<{ rate: number; batches: number }> {
  const clientId = `bench-bridge-${hex()}`
  const store = await openStore(databaseUrl, storeOptions)
  try {
    await backlogForBridge(url, store, clientId, n, frame)
    const metrics = createMetrics()
    let t0 = 0
    const bridge = startBridge({ mqttUrl: url, store, metrics, log: silent, clientId, autoRegister: true })
    bridge.client.once("connect", () => (t0 = performance.now()))
    while ((await storedFrames(metrics)) < n) await new Promise((r) => setTimeout(r, 5))
    const s = (performance.now() - t0) / 1000
    await bridge.stop()
    // every interval of every frame is a committed row
    const f = frame(0)
    const meter = f.topic.split("/")[2]
    const rows = await store.readings(meter, { limit: 100000 })
    const perMeter = Math.ceil(n / meters)
    if (rows.length !== perMeter * 4)
      throw new Error(`expected ${perMeter * 4} rows for ${meter}, found ${rows.length}`)
    const batches = (await metrics.batchFrames.get()).values.find(
      (v) => v.metricName === "citymeter_ingest_batch_frames_count",
    )?.value
    return { rate: n / s, batches: batches ?? 0 }
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

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]

/**
 * Latency at a steady rate: frames published every 10 ms to a live bridge; publish → commit
 * (ingest's handle() resolves, acks follow) and publish → the meter's down/ack.
 */
async function latency(url: string, databaseUrl: string, storeOptions: StoreOptions, seconds: number, rate = 1000) {
  const store = await openStore(databaseUrl, storeOptions)
  const bridge = startBridge({
    mqttUrl: url,
    store,
    metrics: createMetrics(),
    log: silent,
    clientId: `bench-lat-${hex()}`,
    autoRegister: true,
  })
  await bridge.ready
  try {
    return await steadyLoad(url, bridge, seconds, rate)
  } finally {
    await bridge.stop()
    await store.close()
  }
}

/**
 * Publishes `rate` frames/s for `seconds` from 500 meters to a running bridge and times each
 * frame: publish → commit (the bridge's ingest callback, after its batch committed) and publish →
 * the meter's down/ack. The first second is warm-up.
 */
export async function steadyLoad(url: string, bridge: Bridge, seconds: number, rate = 1000) {
  const run = hex()
  const meters = 500
  const published = new Map<string, number>()
  const committed: number[] = []
  const acked: number[] = []
  // the bridge's own ingest, timed: its callback runs after the frame's batch has committed
  const submit = bridge.ingest.submit.bind(bridge.ingest)
  bridge.ingest.submit = (topic, payload, at, done) =>
    submit(topic, payload, at, (err, outcome) => {
      const seq = Number(citymeter.v1.Uplink.decode(payload).seq)
      const t = published.get(`${topic.split("/")[2]}/${seq}`)
      if (t !== undefined && !err) committed.push(performance.now() - t)
      done(err, outcome)
    })
  const acks = await mqtt.connectAsync(url, { clientId: `bench-acks-${run}` })
  await acks.subscribeAsync("citymeter/v1/+/down/ack", { qos: 1 })
  acks.on("message", (topic, p) => {
    const ack = citymeter.v1.Downlink.decode(p).ack
    const t = published.get(`${topic.split("/")[2]}/${Number(ack?.seq)}`)
    if (t !== undefined) acked.push(performance.now() - t)
  })
  const pub = await mqtt.connectAsync(url, { clientId: `bench-latpub-${run}` })
  const nowS = Math.floor(Date.now() / 1000)
  const total = seconds * rate
  const perTick = rate / 100
  let i = 0
  const t0 = performance.now()
  await new Promise<void>((resolve) => {
    const tick = () => {
      // frames due by now (catches up after a late timer, so the rate holds)
      const due = Math.min(total, Math.floor(((performance.now() - t0) / 10) * perTick) + perTick)
      for (; i < due; i++) {
        const f = backlogFrame(run, i, meters, nowS)
        const key = `${f.topic.split("/")[2]}/${Math.floor(i / meters) + 1}`
        published.set(key, performance.now())
        pub.publish(f.topic, f.payload, { qos: 1 })
      }
      if (i < total) setTimeout(tick, 10)
      else resolve()
    }
    tick()
  })
  const t1 = Date.now()
  while ((committed.length < total || acked.length < total) && Date.now() - t1 < 30_000)
    await new Promise((r) => setTimeout(r, 50))
  await pub.endAsync()
  await acks.endAsync()
  bridge.ingest.submit = submit
  // the first second is warm-up
  const steady = (xs: number[]) => xs.slice(rate).sort((a, b) => a - b)
  const c = steady(committed)
  const a = steady(acked)
  return {
    frames: total,
    commit: { p50: percentile(c, 0.5), p99: percentile(c, 0.99), max: c.at(-1) ?? NaN, n: committed.length },
    ack: { p50: percentile(a, 0.5), p99: percentile(a, 0.99), max: a.at(-1) ?? NaN, n: acked.length },
  }
}

const procStatus = (pid: number, field: string) =>
  Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) / 1024

/** The bridge as its own process drains a session holding `n` frames: peak RSS and rate. */
async function backlogMemory(mosq: MosquittoProcess, n: number) {
  const schema = `bench_${hex()}`
  const env = {
    MQTT_URL: mosq.url,
    DATABASE_URL: PG_URL,
    DATABASE_SCHEMA: schema,
    MQTT_CLIENT_ID: `bench-rss-${hex()}`,
    CITYMETER_MODE: "demo",
    LOG_LEVEL: "warn",
  }
  const run = hex()
  const meters = Math.ceil(n / 40)
  const nowS = Math.floor(Date.now() / 1000)
  const db = new pg.Client({ connectionString: PG_URL })
  try {
    const bridge = new BridgeProcess(env)
    await bridge.start() // creates the schema and the session
    await bridge.stop()
    await publish(mosq.url, n, (i) => backlogFrame(run, i, meters, nowS))
    await db.connect()
    await bridge.start()
    const pid = bridge.pid!
    const t0 = performance.now()
    let idleRss = procStatus(pid, "VmRSS")
    let maxRss = idleRss
    for (;;) {
      await new Promise((r) => setTimeout(r, 1000))
      maxRss = Math.max(maxRss, procStatus(pid, "VmRSS"))
      const { rows } = await db.query<{ n: string }>(`SELECT count(*) AS n FROM ${schema}.frames`)
      if (Number(rows[0].n) >= n) break
    }
    const s = (performance.now() - t0) / 1000
    const peak = procStatus(pid, "VmHWM")
    idleRss = procStatus(pid, "VmRSS")
    await bridge.stop()
    return {
      frames: n,
      seconds: s,
      rate: n / s,
      drainMaxMiB: maxRss,
      peakMiB: Math.max(peak, maxRss),
      afterMiB: idleRss,
    }
  } finally {
    await db.end().catch(() => {})
    await dropSchema(schema)
  }
}

const fmt = (n: number) => Math.round(n).toLocaleString("en-US")

export async function ingestBench(quick: boolean): Promise<IngestRow[]> {
  const frames = quick ? 600 : 20000
  const meters = quick ? 50 : 500
  console.log(
    `\n## bridge ingest (private Mosquitto, backlog of ${frames} frames × 4 intervals from ${meters} meters, QoS 1)`,
  )
  console.log(
    "data tier                          broker → do-nothing subscriber (baseline)  broker → committed rows  ratio",
  )
  const mosq = await MosquittoProcess.create()
  const rows: IngestRow[] = []
  const lite = mkdtempSync(join(tmpdir(), "cm-bench-pglite-"))
  const liteOff = mkdtempSync(join(tmpdir(), "cm-bench-pglite-"))
  try {
    const engines: [string, string, StoreOptions][] = [
      ["PostgreSQL", PG_URL, { schema: `bench_${randomBytes(4).toString("hex")}` }],
      ["PGlite (file, fsync per commit)", `pglite:${lite}`, {}],
      ["PGlite (file, fsync off)", `pglite:${liteOff}`, { durable: false }],
    ]
    for (const [engine, url, opts] of engines) {
      const run = hex()
      const frame = (i: number) => backlogFrame(run, i, meters, Math.floor(Date.now() / 1000))
      // baseline and bridge back to back on the same broker, so both see the same machine load
      const baseline = await baselineRate(mosq.url, frames, frame)
      let bridge: { rate: number; batches: number }
      try {
        const run2 = hex()
        bridge = await bridgeRate(mosq.url, url, opts, frames, meters, (i) =>
          backlogFrame(run2, i, meters, Math.floor(Date.now() / 1000)),
        )
      } finally {
        if (opts.schema) await dropSchema(opts.schema)
      }
      rows.push({ engine, frames, baseline, bridge: bridge.rate })
      console.log(
        `${engine.padEnd(33)}  ${baseline.toFixed(0).padStart(33)} frames/s  ${bridge.rate.toFixed(0).padStart(14)} frames/s  ${(bridge.rate / baseline).toFixed(3)}`,
      )
    }
    const [, liteRow, offRow] = rows
    console.log(
      `durability on the embedded engine (fsync of the WAL at each commit): ${((liteRow.bridge / offRow.bridge) * 100).toFixed(0)} % of the rate without (ratio ${(liteRow.bridge / offRow.bridge).toFixed(2)})`,
    )

    const seconds = quick ? 2 : 20
    console.log(`\n## latency at a steady 1,000 frames/s (${seconds} s, first second dropped; ms)`)
    console.log("data tier                          publish → commit p50 / p99    publish → meter's ack p50 / p99")
    for (const [engine, url, opts] of engines.slice(0, 2)) {
      const schema = opts.schema ? `bench_${hex()}` : undefined
      const l = await latency(mosq.url, url, { ...opts, schema }, seconds).finally(() => schema && dropSchema(schema))
      console.log(
        `${engine.padEnd(33)}  ${l.commit.p50.toFixed(1).padStart(10)} / ${l.commit.p99.toFixed(1).padEnd(14)}  ${l.ack.p50.toFixed(1).padStart(10)} / ${l.ack.p99.toFixed(1)}` +
          (l.commit.n < l.frames || l.ack.n < l.frames
            ? `  (${l.commit.n} committed, ${l.ack.n} acked of ${l.frames})`
            : ""),
      )
    }

    if (!quick) {
      const n = 1_000_000
      console.log(`\n## bridge memory with a backlog of ${fmt(n)} frames (PostgreSQL, bridge in its own process)`)
      const m = await backlogMemory(mosq, n)
      console.log(
        `drained ${fmt(m.frames)} frames in ${m.seconds.toFixed(0)} s (${fmt(m.rate)} frames/s); bridge RSS: at most ${m.drainMaxMiB.toFixed(0)} MiB while draining (sampled each second), peak ${m.peakMiB.toFixed(0)} MiB (VmHWM), ${m.afterMiB.toFixed(0)} MiB after`,
      )
    }
  } finally {
    await mosq.stop()
    rmSync(lite, { recursive: true, force: true })
    rmSync(liteOff, { recursive: true, force: true })
    rmSync(mosq.dir, { recursive: true, force: true })
  }
  return rows
}
