// Real-firmware VMs per machine: `citymeter sim --meters N --interval 1 --batch 1` (the
// worker pool, sim/src/workers.ts) in a process of its own, against a private Mosquitto and a
// bridge process on PostgreSQL. Whether every meter kept every interval is read from what the
// bridge stored — its frame ledger's received_at per (meter, boot, seq) — not from the simulator:
// a meter missed an interval when fewer frames than one a second arrived in the window, or when two
// arrivals (or an arrival and the window's edge) are more than 1.5 intervals apart.
// Baseline (full run): the same kind of step with every VM in one thread and the CLI's VM loop (a
// pass every 10 ms, CITYMETER_SIM_LOOP=cli), as the simulator ran before.
import { spawn, type ChildProcess } from "node:child_process"
import { randomBytes } from "node:crypto"
import { readFileSync, rmSync } from "node:fs"
import { availableParallelism, loadavg } from "node:os"
import { join } from "node:path"
import pg from "pg"
import { paths } from "../sim/src/paths.js"
import { PG_URL, dropSchema } from "../testkit/services.js"
import { BridgeProcess, MosquittoProcess } from "../testkit/infra.js"

const INTERVAL_S = 1
/** Linux reports process CPU times in clock ticks of 1/100 s (sysconf(_SC_CLK_TCK) on x86-64 and arm64). */
const CLK_TCK = 100

interface Step {
  label: string
  vms: number
  workers: number
  /** Meters with fewer frames than intervals in the window (less one for the edges) or a gap > 1.5 s. */
  missedMeters: number
  /** Frames short of one per interval, summed over the meters. */
  missedIntervals: number
  minFrames: number
  maxGapS: number
  stored: number
  cpuMsPerVmS: number
  rssMiB: number
  hostRssMiB: number
  startS: number
  load: number
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function procCpuMs(pid: number): number {
  // /proc/<pid>/stat: the fields after the command's closing parenthesis; utime and stime are 14, 15
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK
}

function procRssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))
  return m ? Number(m[1]) / 1024 : NaN
}

/** Runs `citymeter sim` until all its meters run; resolves with the process and its pre-VM RSS. */
async function startSim(args: string[], env: Record<string, string>, timeoutMs: number) {
  const p = spawn(process.execPath, [join(paths.root, "cli/bin/citymeter.js"), "sim", ...args], {
    cwd: paths.root,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  })
  const tail: string[] = []
  let hostRssMiB = NaN
  const running = new Promise<void>((resolve, reject) => {
    let buf = ""
    p.stdout!.on("data", (b: Buffer) => {
      buf += b
      const lines = buf.split("\n")
      buf = lines.pop()!
      for (const l of lines) {
        if (l.startsWith("starting ")) hostRssMiB = procRssMiB(p.pid!) // before any worker thread
        if (/meter\(s\) running in \d+ worker thread/.test(l)) resolve()
        if (/error/i.test(l)) tail.push(l)
      }
    })
    p.stderr!.on("data", (b: Buffer) => tail.push(String(b)))
    p.on("exit", (code) => reject(new Error(`citymeter sim exited (${code}): ${tail.slice(-5).join("\n")}`)))
    setTimeout(() => reject(new Error(`citymeter sim: meters not running after ${timeoutMs} ms`)), timeoutMs)
  })
  try {
    await running
  } catch (e) {
    await stopSim(p)
    throw e
  }
  return { p, hostRssMiB }
}

async function stopSim(p: ChildProcess) {
  if (p.exitCode !== null || p.signalCode !== null) return
  const exited = new Promise((r) => p.once("exit", r))
  p.kill("SIGTERM")
  await Promise.race([exited, sleep(20_000)])
  if (p.exitCode === null && p.signalCode === null) {
    p.kill("SIGKILL")
    await exited
  }
}

async function step(
  label: string,
  vms: number,
  workers: number,
  env: Record<string, string>,
  ctx: { mosq: MosquittoProcess; db: pg.Client; schema: string; run: string },
  windowS: number,
): Promise<Step> {
  const prefix = `bsim-${ctx.run}-${label}-${vms}`
  const t0 = performance.now()
  const { p, hostRssMiB } = await startSim(
    [
      ...["--meters", String(vms), "--interval", String(INTERVAL_S), "--batch", "1"],
      ...["--workers", String(workers), "--prefix", prefix, "-u", ctx.mosq.url],
    ],
    env,
    60_000 + vms * 1000,
  )
  const startS = (performance.now() - t0) / 1000
  try {
    await sleep(4000) // the last meters connect, are born, get the time and send their first frames
    const from = new Date()
    const cpu0 = procCpuMs(p.pid!)
    const w0 = performance.now()
    await sleep(windowS * 1000)
    const cpuMs = procCpuMs(p.pid!) - cpu0
    const wallS = (performance.now() - w0) / 1000
    const to = new Date()
    const rssMiB = procRssMiB(p.pid!)
    const load = loadavg()[0]
    await stopSim(p)
    await sleep(2000) // frames sent before the stop reach the ledger
    const { rows } = await ctx.db.query<{ meter_id: string; at: Date[] }>(
      `SELECT meter_id, array_agg(received_at ORDER BY received_at) AS at FROM ${ctx.schema}.frames
       WHERE kind = 'readings' AND meter_id LIKE $1 AND received_at >= $2 AND received_at < $3 GROUP BY meter_id`,
      [`${prefix}-%`, from, to],
    )
    const byMeter = new Map(rows.map((r) => [r.meter_id, r.at.map((d) => d.getTime())]))
    const expected = Math.floor(wallS / INTERVAL_S) - 1 // a frame may fall either side of each edge
    let missedMeters = 0
    let missedIntervals = 0
    let minFrames = Infinity
    let maxGapS = 0
    let stored = 0
    for (let i = 1; i <= vms; i++) {
      const at = byMeter.get(`${prefix}-${String(i).padStart(3, "0")}`) ?? []
      stored += at.length
      const ts = [from.getTime(), ...at, to.getTime()]
      let gap = 0
      for (let k = 1; k < ts.length; k++) gap = Math.max(gap, (ts[k] - ts[k - 1]) / 1000)
      const short = Math.max(0, expected - at.length)
      missedIntervals += short
      if (short > 0 || gap > 1.5 * INTERVAL_S) missedMeters++
      minFrames = Math.min(minFrames, at.length)
      maxGapS = Math.max(maxGapS, gap)
    }
    return {
      label,
      vms,
      workers,
      missedMeters,
      missedIntervals,
      minFrames,
      maxGapS,
      stored,
      cpuMsPerVmS: cpuMs / wallS / vms,
      rssMiB,
      hostRssMiB,
      startS,
      load,
    }
  } finally {
    await stopSim(p)
  }
}

const COLUMNS: [string, (s: Step) => string][] = [
  ["step    ", (s) => s.label],
  ["VMs", (s) => String(s.vms)],
  ["workers", (s) => String(s.workers)],
  ["kept", (s) => (s.missedMeters ? "NO" : "yes")],
  ["intervals missed", (s) => String(s.missedIntervals)],
  ["meters missing one", (s) => String(s.missedMeters)],
  ["min frames", (s) => String(s.minFrames)],
  ["max gap s", (s) => s.maxGapS.toFixed(2)],
  ["CPU ms/s per VM", (s) => s.cpuMsPerVmS.toFixed(2)],
  ["RSS MiB", (s) => s.rssMiB.toFixed(0)],
  ["start s", (s) => s.startS.toFixed(0)],
  ["load", (s) => s.load.toFixed(1)],
]
const header = () => COLUMNS.map(([h]) => h).join("  ")
const row = (s: Step) => COLUMNS.map(([h, f], i) => (i ? f(s).padStart(h.length) : f(s).padEnd(h.length))).join("  ")

export interface SimResult {
  maxVms: number
  cpuMsPerVmS: number
  rssPerVmMiB: number
}

export async function simBench(quick: boolean): Promise<SimResult> {
  const workers = availableParallelism()
  const windowS = quick ? 4 : 20
  console.log(
    `\n## real-firmware VMs per machine (citymeter sim, ${workers} worker threads, ${INTERVAL_S} s intervals, batch 1; ` +
      `frames as the bridge stored them, ${windowS} s window)`,
  )
  const mosq = await MosquittoProcess.create()
  const schema = `bench_sim_${randomBytes(4).toString("hex")}`
  const bridge = new BridgeProcess({
    MQTT_URL: mosq.url,
    DATABASE_URL: PG_URL,
    DATABASE_SCHEMA: schema,
    LOG_LEVEL: "warn",
    CITYMETER_MODE: "demo",
  })
  const db = new pg.Client({ connectionString: PG_URL })
  const ctx = { mosq, db, schema, run: randomBytes(2).toString("hex") }
  try {
    await bridge.start()
    await db.connect()
    console.log(header())
    const steps: Step[] = []
    let baseline: Step | undefined
    if (!quick) {
      baseline = await step("baseline", 64, 1, { CITYMETER_SIM_LOOP: "cli" }, ctx, windowS)
      console.log(row(baseline))
    }
    // the issue's points always; more while every interval is kept
    const ns = quick ? [8] : [64, 128, 300, 400, 500]
    for (const n of ns) {
      if (n > 300 && steps.some((s) => s.missedMeters)) break
      const s = await step("pool", n, workers, {}, ctx, windowS)
      steps.push(s)
      console.log(row(s))
    }
    // the largest step below which every step kept every interval
    const firstMiss = steps.findIndex((s) => s.missedMeters)
    const kept = firstMiss < 0 ? steps : steps.slice(0, firstMiss)
    const maxVms = kept.length ? kept[kept.length - 1].vms : 0
    const ref = kept.length ? kept[kept.length - 1] : steps[steps.length - 1]
    // RSS per VM: the slope between the first and the last step; one step: above the host's RSS
    const first = steps[0]
    const rssPerVmMiB =
      steps.length > 1 && ref.vms > first.vms
        ? (ref.rssMiB - first.rssMiB) / (ref.vms - first.vms)
        : (ref.rssMiB - ref.hostRssMiB) / ref.vms
    console.log(
      `real-firmware VMs with every interval kept (as stored by the bridge; ${workers} cores, worker pool): ${maxVms}` +
        `${quick ? " (quick: one step of 8)" : ""}; baseline: 1 VM; ratio ${maxVms}×`,
    )
    console.log(
      `per VM at ${ref.vms} VMs: CPU ${ref.cpuMsPerVmS.toFixed(2)} ms/s (${(ref.cpuMsPerVmS / 10).toFixed(2)} % of a core), ` +
        `RSS ${rssPerVmMiB.toFixed(2)} MiB (${steps.length > 1 && ref.vms > first.vms ? `slope ${first.vms}→${ref.vms} VMs` : `above the host's ${ref.hostRssMiB.toFixed(0)} MiB, threads included`})`,
    )
    if (baseline) {
      const same = steps.find((s) => s.vms === baseline.vms)
      if (same)
        console.log(
          `CPU per VM at ${same.vms} VMs: ${same.cpuMsPerVmS.toFixed(2)} ms/s; baseline (one thread, the CLI's 10 ms VM loop) ` +
            `${baseline.cpuMsPerVmS.toFixed(2)} ms/s; ratio ${(same.cpuMsPerVmS / baseline.cpuMsPerVmS).toFixed(2)}×`,
        )
    }
    return { maxVms, cpuMsPerVmS: ref.cpuMsPerVmS, rssPerVmMiB }
  } finally {
    await db.end().catch(() => {})
    await bridge.stop()
    await mosq.stop()
    rmSync(mosq.dir, { recursive: true, force: true })
    await dropSchema(schema)
  }
}
