// CPU profile of the bridge draining a backlog: `npx tsx bench/profile.ts [frames] [pg|pglite]`.
// The frames are published first; the V8 profiler (node:inspector) runs only while the bridge,
// in this process, drains them into the data tier. Prints CPU µs per frame (process.cpuUsage) and
// self time by function and by package / source file.
import { randomBytes } from "node:crypto"
import { Session } from "node:inspector/promises"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Writable } from "node:stream"
import pino from "pino"
import { startBridge } from "../bridge/src/bridge.js"
import { createMetrics } from "../bridge/src/metrics.js"
import { openStore } from "../bridge/src/store/engines.js"
import { MosquittoProcess } from "../testkit/infra.js"
import { PG_URL, dropSchema } from "../testkit/services.js"
import { backlogFrame, backlogForBridge } from "./ingest.js"

const n = Number(process.argv[2] ?? 50000)
const engine = process.argv[3] ?? "pg"
const meters = 500
const silent = pino({ level: "warn" }, new Writable({ write: (_c, _e, cb) => cb() }))
const hex = () => randomBytes(3).toString("hex")

interface Node {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  hitCount: number
}
interface Profile {
  nodes: Node[]
  samples: number[]
  timeDeltas: number[]
}

function summarise(p: Profile, frames: number) {
  const byId = new Map(p.nodes.map((x) => [x.id, x]))
  const selfUs = new Map<number, number>()
  for (let i = 0; i < p.samples.length; i++)
    selfUs.set(p.samples[i], (selfUs.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0))
  const fn = new Map<string, number>()
  const file = new Map<string, number>()
  let total = 0
  let idle = 0
  for (const [id, us] of selfUs) {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame
    if (functionName === "(idle)") {
      idle += us
      continue
    }
    total += us
    const where = url.replace(/^file:\/\/.*?\/(node_modules\/|wt\/[^/]+\/)/, "$1")
    const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(where)?.[1] ?? (where || functionName)
    const key = `${functionName || "(anonymous)"} ${where.split("/").slice(-2).join("/")}:${lineNumber + 1}`
    fn.set(key, (fn.get(key) ?? 0) + us)
    const f = pkg.startsWith("node:") || !where ? pkg : pkg.includes("/") ? pkg.split("/").slice(-2).join("/") : pkg
    file.set(f, (file.get(f) ?? 0) + us)
  }
  const top = (m: Map<string, number>, k: number) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, k)
      .map(
        ([name, us]) =>
          `${(us / frames).toFixed(2).padStart(8)} µs/frame  ${((us / total) * 100).toFixed(1).padStart(5)} %  ${name}`,
      )
  console.log(
    `profiled busy ${(total / 1000).toFixed(0)} ms (${(total / frames).toFixed(1)} µs/frame), idle ${(idle / 1000).toFixed(0)} ms`,
  )
  console.log("\nby package / file:\n" + top(file, 25).join("\n"))
  console.log("\nby function:\n" + top(fn, 45).join("\n"))
}

const log = (s: string) => process.stderr.write(`[${new Date().toISOString()}] ${s}\n`)
const mosq = await MosquittoProcess.create()
log("mosquitto up")
const schema = `bench_${hex()}`
const dir = mkdtempSync(join(tmpdir(), "cm-prof-"))
const store = await openStore(engine === "pg" ? PG_URL : `pglite:${dir}`, { schema })
try {
  const clientId = `prof-${hex()}`
  const run = hex()
  const nowS = Math.floor(Date.now() / 1000)
  await backlogForBridge(mosq.url, store, clientId, n, (i) => backlogFrame(run, i, meters, nowS))
  log("published")
  const metrics = createMetrics()
  const session = new Session()
  session.connect()
  await session.post("Profiler.enable")
  await session.post("Profiler.setSamplingInterval", { interval: 200 })
  const prof = process.argv.includes("--no-prof") ? undefined : session.post("Profiler.start")
  await prof
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  const bridge = startBridge({ mqttUrl: mosq.url, store, metrics, log: silent, clientId, autoRegister: true })
  for (;;) {
    const stored = (await metrics.framesStored.get()).values.reduce((a, v) => a + v.value, 0)
    if (stored >= n) break
    await new Promise((r) => setTimeout(r, 5))
  }
  const s = (performance.now() - t0) / 1000
  const cpu = process.cpuUsage(c0)
  let profile: Profile | undefined
  if (prof) profile = ((await session.post("Profiler.stop")) as { profile: Profile }).profile
  await bridge.stop()
  console.log(
    `${engine}: ${n} frames in ${s.toFixed(2)} s = ${(n / s).toFixed(0)} frames/s; process CPU ${((cpu.user + cpu.system) / n).toFixed(1)} µs/frame (user ${(cpu.user / n).toFixed(1)}, sys ${(cpu.system / n).toFixed(1)})`,
  )
  if (profile) {
    writeFileSync(join(tmpdir(), "bridge.cpuprofile"), JSON.stringify(profile))
    summarise(profile, n)
  }
} finally {
  await store.close()
  if (engine === "pg") await dropSchema(schema)
  await mosq.stop()
  rmSync(dir, { recursive: true, force: true })
  rmSync(mosq.dir, { recursive: true, force: true })
}
process.exit(0)
