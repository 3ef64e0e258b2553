// A fleet rollout measured (`npm run bench:rollout [-- --meters 100 --concurrency 10]`, issue 23):
// N real-firmware Pico W VMs (this process) send readings to a bridge in its own process (private
// Mosquitto, a private PostgreSQL schema); after a baseline of plain ingest, a rollout sends them
// all a different program over the runtime's own deploy path. Reported: the rollout's time, each
// deploy's time and bytes, the bridge process's CPU and RSS (from /proc) and the ingest latency
// (a meter's uplink seen on the broker → the bridge's ack to it seen on the broker), each during
// the rollout against the baseline measured in the same run.
import { generateKeyPairSync, randomBytes } from "node:crypto"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import mqtt from "mqtt"
import { manifestOf, signManifest } from "../bridge/src/releases.js"
import { openPostgres } from "../bridge/src/store/engines.js"
import { TOPIC_ROOT } from "../bridge/src/topics.js"
import type { SimMeter } from "../sim/src/meter.js"
import { paths } from "../sim/src/paths.js"
import { buildVariant } from "../testkit/firmware-variant.js"
import { BridgeProcess, MosquittoProcess, freePort } from "../testkit/infra.js"
import { UPDATE_BOARD as BOARD, startUpdateMeter } from "../testkit/update-fleet.js"
import { PG_URL, dropSchema } from "../testkit/services.js"
import { waitFor } from "../testkit/wait.js"

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(name)
  return i >= 0 ? Number(process.argv[i + 1]) : dflt
}
const N = arg("--meters", 100)
const CONCURRENCY = arg("--concurrency", 10)
const BASELINE_S = arg("--baseline-s", 60)
const TOKEN = "bench-ops"
const V1 = /VERSION = "([^"]+)"/.exec(readFileSync(join(paths.root, "firmware/gen/version.ts"), "utf8"))![1]
const V2 = `${V1}-bench2`

/** utime + stime of a process, s, and its RSS, MiB (proc(5)). */
function procStat(pid: number) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  const tick = 100 // USER_HZ
  const cpuS = (Number(f[11]) + Number(f[12])) / tick
  const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024
  return { cpuS, rss }
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN
}

const t0 = Date.now()
const schema = `bench_${randomBytes(5).toString("hex")}`
const keys = generateKeyPairSync("ed25519")
const dir = mkdtempSync(join(tmpdir(), "cm-bench-rollout-"))
const pubFile = join(dir, "release-public.pem")
writeFileSync(pubFile, keys.publicKey.export({ type: "spki", format: "pem" }) as string)
const v1 = readFileSync(join(paths.root, ".devicescript/boards", `${BOARD}.devs`))
const v2 = (await buildVariant({ board: BOARD, version: V2 })).bytes
const broker = await MosquittoProcess.create()
const wsskPort = await freePort()
const bridge = new BridgeProcess({
  DATABASE_URL: PG_URL,
  DATABASE_SCHEMA: schema,
  MQTT_URL: broker.url,
  WSSK_PORT: String(wsskPort),
  RELEASE_PUBLIC_KEY: pubFile,
  API_TOKEN_OPS: TOKEN,
  LOG_LEVEL: "info",
})
await bridge.start()
const pid = bridge.pid!
const api = async (method: string, path: string, body?: object) => {
  const res = await fetch(`${bridge.apiUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body && JSON.stringify(body),
  })
  const json = (await res.json()) as Record<string, unknown>
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`)
  return json
}
const register = async (version: string, bytes: Buffer) => {
  const manifest = manifestOf(BOARD, version, bytes)
  const pem = keys.privateKey.export({ type: "pkcs8", format: "pem" }) as string
  const r = await api("POST", "/releases", {
    manifest,
    signature: signManifest(manifest, pem).toString("base64"),
    bytecode: bytes.toString("base64"),
  })
  return r.id as number
}

// the registry: sealed meters with link keys, written beside the bridge on its schema
const store = await openPostgres(PG_URL, { schema })
const meters: SimMeter[] = []
for (let i = 0; i < N; i++) {
  const meterId = `bench-${String(i).padStart(3, "0")}-${randomBytes(2).toString("hex")}`
  meters.push(await startUpdateMeter(store, { meterId, mqttUrl: broker.url, intervalS: 10, volumeMl: 1000 + i }))
}
await waitFor(
  `${N} meters born on ${V1}`,
  async () => (await store.listMeters()).filter((m) => m.firmware === `citymeter-fw ${V1}`).length === N,
  300_000,
  500,
)

// ingest latency: each meter's uplink on the broker → the next ack to that meter on the broker
let phase: "baseline" | "rollout" | "after" = "baseline"
const latency = { baseline: [] as number[], rollout: [] as number[], after: [] as number[] }
const upAt = new Map<string, number>()
const spy = await mqtt.connectAsync(broker.url, { clientId: `bench-spy-${randomBytes(3).toString("hex")}` })
await spy.subscribeAsync([`${TOPIC_ROOT}/+/up/readings`, `${TOPIC_ROOT}/+/down/ack`], { qos: 0 })
spy.on("message", (topic) => {
  const [, , meterId, dirn] = topic.split("/")
  const now = performance.now()
  if (dirn === "up") upAt.set(meterId, now)
  else {
    const at = upAt.get(meterId)
    if (at !== undefined) latency[phase].push(now - at)
    upAt.delete(meterId)
  }
})

const sample = async (ms: number) => {
  const a = procStat(pid)
  const peak = { rss: a.rss }
  const until = Date.now() + ms
  while (Date.now() < until) {
    await new Promise((r) => setTimeout(r, 250))
    peak.rss = Math.max(peak.rss, procStat(pid).rss)
  }
  const b = procStat(pid)
  return { cpuPct: (100 * (b.cpuS - a.cpuS)) / (ms / 1000), rssPeak: peak.rss, rssEnd: b.rss }
}

const base = await sample(BASELINE_S * 1000)
const r1 = await register(V1, v1)
const r2 = await register(V2, v2)
void r1
phase = "rollout"
const start = performance.now()
const cpuA = procStat(pid)
let rssPeak = cpuA.rss
const created = await api("POST", "/rollouts", {
  releaseId: r2,
  stages: [{ kind: "canary", share: 0.05 }, { kind: "all" }],
  concurrency: CONCURRENCY,
  verifyS: 120,
  windowS: 60,
})
const id = created.id as number
let last: Record<string, unknown> = created
await waitFor(
  "the rollout to end",
  async () => {
    rssPeak = Math.max(rssPeak, procStat(pid).rss)
    last = await api("GET", `/rollouts/${id}`)
    return last.state !== "running" && last.state !== "paused"
  },
  1_800_000,
  250,
)
const rolloutS = (performance.now() - start) / 1000
const cpuB = procStat(pid)
phase = "after"
const deploys = bridge.output
  .map((l) => {
    try {
      return JSON.parse(l) as { msg?: string; ms?: number; bytes?: number }
    } catch {
      return {}
    }
  })
  .filter((l) => l.msg === "rollout: deployed")
const deployMs = deploys.map((d) => d.ms!)
const after = await sample(20_000)

const lat = (xs: number[]) => `p50 ${pct(xs, 50).toFixed(0)} ms, p99 ${pct(xs, 99).toFixed(0)} ms (${xs.length})`
const rolloutCpu = (100 * (cpuB.cpuS - cpuA.cpuS)) / rolloutS
console.log(`\n${N} meters, concurrency ${CONCURRENCY}, ${v2.length} B program (${V1} → ${V2})`)
console.log(`rollout: ${last.state} in ${rolloutS.toFixed(1)} s; counts ${JSON.stringify(last.counts)}`)
console.log(
  `deploys: ${deploys.length}, p50 ${pct(deployMs, 50)} ms, p99 ${pct(deployMs, 99)} ms, max ${Math.max(...deployMs)} ms; ` +
    `${deploys[0]?.bytes ?? v2.length} B each`,
)
console.log(
  `bridge CPU: baseline ${base.cpuPct.toFixed(1)} %, rollout ${rolloutCpu.toFixed(1)} % (×${(rolloutCpu / base.cpuPct).toFixed(2)}), after ${after.cpuPct.toFixed(1)} %`,
)
console.log(
  `bridge RSS: baseline peak ${base.rssPeak.toFixed(0)} MiB, rollout peak ${rssPeak.toFixed(0)} MiB (×${(rssPeak / base.rssPeak).toFixed(2)}), after ${after.rssEnd.toFixed(0)} MiB`,
)
console.log(
  `ingest latency (uplink → ack on the broker): baseline ${lat(latency.baseline)}; rollout ${lat(latency.rollout)}; after ${lat(latency.after)}`,
)
console.log(
  `ratio p50 rollout/baseline ×${(pct(latency.rollout, 50) / pct(latency.baseline, 50)).toFixed(2)}, p99 ×${(pct(latency.rollout, 99) / pct(latency.baseline, 99)).toFixed(2)}`,
)
console.log(`bench wall time ${((Date.now() - t0) / 1000).toFixed(0)} s`)

await spy.endAsync()
for (const m of meters) await m.stop()
await bridge.stop()
await store.close()
await broker.stop()
await dropSchema(schema)
