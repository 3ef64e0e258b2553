// The bridge as compiled JavaScript on plain Node (`node --enable-source-maps dist/bridge/src/main.js`,
// what `npm run bridge` and the systemd unit run) against the baseline, the same sources through tsx
// (`node --import tsx bridge/src/main.ts`, how it ran before issue 26), in the same run, each start
// alternating between the two. Per start, a process of its own on PostgreSQL (one private schema)
// and a private Mosquitto:
//   - start time: spawn → the first 200 from /healthz (polled every 10 ms), and the CPU time the
//     process spent until then (steadier than the wall time on a shared machine);
//   - idle RSS: VmRSS a few seconds after that, nothing arriving;
//   - CPU per frame: the process's user + system time (/proc) over a steady ingest at a fixed rate
//     of 4-interval frames (bench/ingest.ts backlogFrame, new meters registering as in the demo),
//     from the first publish to the last frame committed, divided by the frames.
// tsx keeps a transform cache on disk: a warm-up start (not counted) fills it, as any second start
// of a deployment would find it.
import { spawn, type ChildProcess } from "node:child_process"
import { randomBytes } from "node:crypto"
import { readFileSync, rmSync } from "node:fs"
import mqtt from "mqtt"
import pg from "pg"
import { ensureDist } from "../scripts/build-dist.js"
import { BRIDGE_ARGV, MosquittoProcess, freePort } from "../testkit/infra.js"
import { PG_URL, dropSchema } from "../testkit/services.js"
import { cpuUs } from "./fleet.js"
import { backlogFrame } from "./ingest.js"

type Variant = keyof typeof BRIDGE_ARGV

export interface StartSample {
  variant: Variant
  startMs: number
  /** CPU time (user + system) the process spent until /healthz answered: start time less the machine's load. */
  startCpuMs: number
  idleRssMiB: number
  cpuUsPerFrame: number
}

const hex = () => randomBytes(3).toString("hex")
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]
const rssMiB = (pid: number) =>
  Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024

async function ended(p: ChildProcess) {
  if (p.exitCode !== null || p.signalCode !== null) return
  await new Promise<void>((r) => {
    p.once("exit", () => r())
    p.kill("SIGTERM")
  })
}

interface RunOptions {
  mosquittoUrl: string
  schema: string
  idleMs: number
  rate: number
  frames: number
}

/** Publishes `frames` frames at `rate` per second, QoS 1, spread over 10 ms ticks. */
async function steadyIngest(url: string, rate: number, frames: number) {
  const run = hex()
  const meters = Math.max(1, Math.ceil(frames / 40)) // at most 40 frames (hours) a meter: none in the future
  const nowS = Math.floor(Date.now() / 1000)
  const pub = await mqtt.connectAsync(url, { clientId: `bench-compiled-pub-${run}` })
  const sent: Promise<unknown>[] = []
  const t0 = performance.now()
  for (let i = 0; i < frames;) {
    const due = Math.min(frames, Math.ceil(((performance.now() - t0) / 1000) * rate) + 1)
    for (; i < due; i++) {
      const f = backlogFrame(run, i, meters, nowS)
      sent.push(pub.publishAsync(f.topic, f.payload, { qos: 1 }))
    }
    await sleep(10)
  }
  await Promise.all(sent)
  await pub.endAsync()
}

/** One start of one variant: its start time, idle RSS, and CPU per frame under a steady ingest. */
async function runOnce(variant: Variant, o: RunOptions, db: pg.Client): Promise<StartSample> {
  const port = await freePort()
  const t0 = performance.now()
  const proc = spawn(process.execPath, [...BRIDGE_ARGV[variant]], {
    env: {
      ...process.env,
      MQTT_URL: o.mosquittoUrl,
      DATABASE_URL: PG_URL,
      DATABASE_SCHEMA: o.schema,
      MQTT_CLIENT_ID: `bench-compiled-${hex()}`,
      CITYMETER_MODE: "demo",
      HTTP_PORT: String(port),
      LOG_LEVEL: "warn",
    },
    stdio: ["ignore", "ignore", "pipe"],
  })
  let stderr = ""
  proc.stderr!.on("data", (b) => (stderr += b))
  try {
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`${variant} bridge exited ${proc.exitCode}: ${stderr}`)
      const ok = await fetch(`http://127.0.0.1:${port}/healthz`).then(
        (r) => r.ok,
        () => false,
      )
      if (ok) break
      if (performance.now() - t0 > 60_000) throw new Error(`${variant} bridge: no /healthz in 60 s: ${stderr}`)
      await sleep(10)
    }
    const startMs = performance.now() - t0
    const startCpuMs = cpuUs(proc.pid!) / 1000
    await sleep(o.idleMs)
    const idleRssMiB = rssMiB(proc.pid!)
    const count = async () => Number((await db.query<{ n: string }>(`SELECT count(*) AS n FROM frames`)).rows[0].n)
    const before = await count()
    const cpu0 = cpuUs(proc.pid!)
    await steadyIngest(o.mosquittoUrl, o.rate, o.frames)
    const t1 = Date.now()
    while ((await count()) < before + o.frames) {
      if (Date.now() - t1 > 60_000) throw new Error(`${variant} bridge: frames not all committed in 60 s`)
      await sleep(20)
    }
    return { variant, startMs, startCpuMs, idleRssMiB, cpuUsPerFrame: (cpuUs(proc.pid!) - cpu0) / o.frames }
  } finally {
    await ended(proc)
  }
}

export async function compiledBench(quick: boolean): Promise<StartSample[]> {
  const starts = quick ? 1 : 5
  const o = { idleMs: quick ? 2000 : 5000, rate: quick ? 200 : 500, frames: quick ? 600 : 10_000 }
  console.log(
    `\n## compiled bridge: plain node on dist/ against tsx on the sources (baseline), ${starts} start(s) each, alternating; ` +
      `PostgreSQL + private Mosquitto; idle RSS ${o.idleMs / 1000} s after /healthz; CPU per frame at a steady ${o.rate} frames/s × ${o.frames}`,
  )
  await ensureDist()
  const mosq = await MosquittoProcess.create()
  const schema = `bench_${hex()}`
  const db = new pg.Client({ connectionString: PG_URL, options: `-c search_path=${schema}` })
  const samples: StartSample[] = []
  try {
    const run = { ...o, mosquittoUrl: mosq.url, schema }
    await db.connect()
    // warm-up, not counted: creates the schema, fills tsx's transform cache
    await runOnce("tsx", { ...run, idleMs: 0, frames: 1 }, db)
    for (let i = 0; i < starts; i++)
      for (const variant of ["tsx", "compiled"] as const) {
        const s = await runOnce(variant, run, db)
        samples.push(s)
        console.log(
          `  start ${i + 1} ${variant.padEnd(8)} ${s.startMs.toFixed(0).padStart(6)} ms to /healthz (CPU ${s.startCpuMs.toFixed(0)} ms), idle RSS ${s.idleRssMiB.toFixed(1)} MiB, ${s.cpuUsPerFrame.toFixed(0)} µs CPU per frame`,
        )
      }
  } finally {
    await db.end().catch(() => {})
    await dropSchema(schema)
    await mosq.stop()
    rmSync(mosq.dir, { recursive: true, force: true })
  }
  const of = (v: Variant, k: "startMs" | "startCpuMs" | "idleRssMiB" | "cpuUsPerFrame") =>
    median(samples.filter((s) => s.variant === v).map((s) => s[k]))
  console.log("measure (median)                         tsx (baseline)    compiled   ratio")
  for (const [name, k, unit, digits] of [
    ["start → /healthz", "startMs", "ms", 0],
    ["start → /healthz, CPU", "startCpuMs", "ms", 0],
    ["idle RSS", "idleRssMiB", "MiB", 1],
    ["CPU per frame, steady ingest", "cpuUsPerFrame", "µs", 0],
  ] as const) {
    const [base, comp] = [of("tsx", k), of("compiled", k)]
    console.log(
      `${`${name} (${unit})`.padEnd(40)} ${base.toFixed(digits).padStart(14)} ${comp.toFixed(digits).padStart(11)}   ${(comp / base).toFixed(2)}`,
    )
  }
  return samples
}
