// Firmware: bytecode size (baseline: a one-line DeviceScript program compiled in the same run),
// VM time per interval (baseline: the interval itself, so the ratio is the VM's duty cycle), and
// how many real-firmware VMs (SimMeter) this machine runs with their intervals kept.
//
// VM time is measured inside the VM host: every call into the WASM VM (its scheduler tick, Jacdac
// frames and socket events from the host) is timed. The tick in which the firmware logs
// "citymeter: frame" is the one that closes the interval: sample → encode → enqueue.
import { spawn } from "node:child_process"
import { existsSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs"
import { cpus, tmpdir } from "node:os"
import { join } from "node:path"
import { createRequire } from "node:module"
import { randomBytes } from "node:crypto"
import { SimMeter } from "../sim/src/meter.js"
import { paths } from "../sim/src/paths.js"
import { BridgeProcess, MosquittoProcess } from "../tests/infra.js"

const require = createRequire(import.meta.url)

/** Compiles a one-line DeviceScript program with the pinned CLI; its bytecode size. */
async function helloBytecodeSize(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), "cm-bench-hello-"))
  try {
    symlinkSync(join(paths.root, "node_modules"), join(dir, "node_modules"))
    writeFileSync(join(dir, "devsconfig.json"), "{}")
    writeFileSync(join(dir, "main.ts"), 'setInterval(() => console.log("hello"), 1000)\n')
    const cli = require.resolve("@devicescript/cli/built/devicescript-cli.cjs")
    const code = await new Promise<number>((r) =>
      spawn(process.execPath, [cli, "build", "main.ts", "--quiet"], { cwd: dir, stdio: "ignore" }).on("close", (c) =>
        r(c ?? 1),
      ),
    )
    if (code) throw new Error(`devs build of the baseline program failed (exit ${code})`)
    return statSync(join(dir, ".devicescript/bin/bytecode.devs")).size
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

interface VmProbe {
  meter: SimMeter
  /** performance.now() of each "citymeter: frame" line. */
  frames: number[]
  /** ms spent in WASM calls since the probe was armed. */
  wasmMs: number
  /** ms of the WASM calls during which a frame was closed. */
  closeMs: number[]
}

const WRAPPED = ["_jd_em_process", "_jd_em_frame_received", "_jd_em_tcpsock_on_event"] as const

async function startProbe(meterId: string, brokerPort: number, intervalS: number, sealKey?: string): Promise<VmProbe> {
  const probe: VmProbe = { meter: undefined as never, frames: [], wasmMs: 0, closeMs: [] }
  let inCall = false
  let frameInCall = false
  probe.meter = new SimMeter({
    meterId,
    settings: {
      MQTT_HOST: "127.0.0.1",
      MQTT_PORT: brokerPort,
      INTERVAL_S: intervalS,
      BATCH: 1,
      ...(sealKey ? { SEAL_KEY: sealKey } : {}),
    },
    log: (line) => {
      if (!line.includes("citymeter: frame ")) return
      probe.frames.push(performance.now())
      if (inCall) frameInCall = true
    },
  })
  probe.meter.setWater({ volumeMl: 1000, flowRateMlMin: 600 })
  probe.meter.setElectricity({ energyWh: 100, powerW: 400, voltageDv: 2300 })
  probe.meter.setPressure(310_000)
  await probe.meter.start()
  // the VM object is SimMeter's emscripten module; its host calls these exports by property
  const vm = (probe.meter as unknown as { vm: Record<string, (...a: unknown[]) => unknown> }).vm
  for (const name of WRAPPED) {
    const orig = vm[name]
    vm[name] = (...a: unknown[]) => {
      const t0 = performance.now()
      inCall = true
      frameInCall = false
      try {
        return orig(...a)
      } finally {
        const ms = performance.now() - t0
        inCall = false
        probe.wasmMs += ms
        if (frameInCall) probe.closeMs.push(ms)
      }
    }
  }
  return probe
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length ? s[Math.floor(s.length / 2)] : NaN
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

interface Window {
  n: number
  kept: boolean
  minFrames: number
  maxGapS: number
  cpuPct: number
  rssMiB: number
}

/** Measures all probes over `ms`: frames per VM, the largest gap between frames, CPU and memory. */
async function measureWindow(probes: VmProbe[], ms: number, intervalS: number): Promise<Window> {
  const t0 = performance.now()
  const c0 = process.cpuUsage()
  const counts0 = probes.map((p) => p.frames.length)
  await sleep(ms)
  const t1 = performance.now()
  const c = process.cpuUsage(c0)
  const expected = Math.floor(ms / 1000 / intervalS)
  let minFrames = Infinity
  let maxGapS = 0
  probes.forEach((p, i) => {
    const inWin = p.frames.slice(counts0[i])
    minFrames = Math.min(minFrames, inWin.length)
    const ts = [t0, ...inWin, t1]
    for (let k = 1; k < ts.length; k++) maxGapS = Math.max(maxGapS, (ts[k] - ts[k - 1]) / 1000)
  })
  return {
    n: probes.length,
    // every VM closed its intervals on time: all of them, none late by more than half an interval
    kept: minFrames >= expected - 1 && maxGapS <= intervalS * 1.5,
    minFrames,
    maxGapS,
    cpuPct: ((c.user + c.system) / 1000 / (t1 - t0)) * 100,
    rssMiB: process.memoryUsage().rss / 2 ** 20,
  }
}

export interface FirmwareResult {
  bytecode: number
  helloBytecode?: number
  wasmMsPerInterval: number
  closeTickMs: number
  sealedTickMs: number
  cpuMsPerInterval: number
  maxVms: number
  rssPerVmMiB: number
}

const BENCH_TOKEN = randomBytes(8).toString("hex")

/** The closing tick of a meter that seals its frames (issue 10), registered with its key first. */
async function sealedCloseTick(bridge: BridgeProcess, brokerPort: number, meterId: string, quick: boolean) {
  const key = randomBytes(32).toString("hex")
  const res = await fetch(`${bridge.apiUrl}/meters/${meterId}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${BENCH_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ key }),
  })
  if (!res.ok) throw new Error(`registering ${meterId}: HTTP ${res.status}`)
  const p = await startProbe(meterId, brokerPort, 1, key)
  try {
    await sleep(quick ? 4000 : 15000)
    return median(p.closeMs)
  } finally {
    await p.meter.stop()
  }
}

export async function firmwareBench(quick: boolean): Promise<FirmwareResult> {
  console.log("\n## firmware (real bytecode in the DeviceScript VM, simulated sensors)")
  if (!existsSync(paths.bytecode)) throw new Error(`${paths.bytecode} is missing: run \`npm run build:firmware\` first`)
  const bytecode = statSync(paths.bytecode).size
  const helloBytecode = quick ? undefined : await helloBytecodeSize()
  console.log(
    `bytecode: ${bytecode} B` +
      (helloBytecode
        ? `; baseline: a one-line DeviceScript program, ${helloBytecode} B; ratio ${(bytecode / helloBytecode).toFixed(1)}×`
        : " (baseline compile skipped in --quick)"),
  )

  const intervalS = 1
  const mosq = await MosquittoProcess.create()
  const bridge = new BridgeProcess({
    MQTT_URL: mosq.url,
    DATABASE_URL: "pglite:memory",
    LOG_LEVEL: "warn",
    CITYMETER_MODE: "demo",
    API_TOKEN: BENCH_TOKEN,
  })
  await bridge.start()
  const run = randomBytes(3).toString("hex")
  const probes: VmProbe[] = []
  try {
    const rss0 = process.memoryUsage().rss
    probes.push(await startProbe(`bench-fw-${run}-0`, mosq.port, intervalS))
    await sleep(quick ? 1500 : 2500) // connect, birth, first frames
    const rss1 = process.memoryUsage().rss
    const p = probes[0]
    const w0 = p.wasmMs
    const f0 = p.frames.length
    const c0 = process.cpuUsage()
    const tWin = quick ? 3000 : 15000
    await sleep(tWin)
    const c = process.cpuUsage(c0)
    const intervals = p.frames.length - f0
    const wasmMsPerInterval = (p.wasmMs - w0) / Math.max(1, intervals)
    const cpuMsPerInterval = (c.user + c.system) / 1000 / Math.max(1, intervals)
    const closeTickMs = median(p.closeMs)
    console.log(
      `time per interval (1 VM, ${intervalS} s intervals, ${intervals} intervals): closing tick (sample → encode → enqueue) ` +
        `${closeTickMs.toFixed(2)} ms median; all VM work ${wasmMsPerInterval.toFixed(2)} ms per interval, ` +
        `process CPU incl. the host's Jacdac bus ${cpuMsPerInterval.toFixed(1)} ms; baseline: the interval, ${intervalS * 1000} ms; ` +
        `ratio (VM duty cycle) ${((wasmMsPerInterval / (intervalS * 1000)) * 100).toFixed(2)}%`,
    )

    const sealedTickMs = await sealedCloseTick(bridge, mosq.port, `bench-fw-${run}-sealed`, quick)
    console.log(
      `sealing in the VM: closing tick with AES-256-CCM ${sealedTickMs.toFixed(2)} ms median; baseline: the open meter's ` +
        `${closeTickMs.toFixed(2)} ms; ratio ${(sealedTickMs / closeTickMs).toFixed(2)}×`,
    )

    // ramp: add VMs until one of them misses or is late with an interval
    const steps = quick ? [2] : [2, 4, 8, 16, 24, 32, 48, 64, 96, 128]
    let maxVms = 1
    let last: Window | undefined
    console.log("VMs  kept  min frames/VM  max gap s  process CPU %  RSS MiB")
    for (const n of steps) {
      while (probes.length < n) probes.push(await startProbe(`bench-fw-${run}-${probes.length}`, mosq.port, intervalS))
      await sleep(quick ? 1000 : 2000)
      const w = await measureWindow(probes, quick ? 2500 : 8000, intervalS)
      console.log(
        `${String(w.n).padStart(3)}  ${w.kept ? "yes " : "NO  "}  ${String(w.minFrames).padStart(13)}  ${w.maxGapS.toFixed(2).padStart(9)}  ` +
          `${w.cpuPct.toFixed(0).padStart(13)}  ${w.rssMiB.toFixed(0).padStart(7)}`,
      )
      last = w
      if (!w.kept) break
      maxVms = n
    }
    // slope from one VM to the last step (the first VM also pays for the WASM module and jacdac-ts)
    const rssPerVmMiB = ((last?.rssMiB ?? 0) * 2 ** 20 - rss1) / 2 ** 20 / Math.max(1, probes.length - 1)
    console.log(
      `real-firmware VMs with intervals kept (${intervalS} s intervals, ${cpus().length} cores, one process): ${maxVms}` +
        `${quick ? " (quick: ramp stops at 2)" : ""}; baseline: 1 VM; ratio ${maxVms}×; ` +
        `≈${rssPerVmMiB.toFixed(1)} MiB RSS per added VM (first VM and host ${((rss1 - rss0) / 2 ** 20).toFixed(0)} MiB)`,
    )
    return {
      bytecode,
      helloBytecode,
      wasmMsPerInterval,
      closeTickMs,
      sealedTickMs,
      cpuMsPerInterval,
      maxVms,
      rssPerVmMiB,
    }
  } finally {
    for (const p of probes) await p.meter.stop()
    await bridge.stop()
    await mosq.stop()
    rmSync(mosq.dir, { recursive: true, force: true })
  }
}
