// Firmware: bytecode size (baseline: a one-line DeviceScript program compiled in the same run) and
// VM time per interval (baseline: the interval itself, so the ratio is the VM's duty cycle). How
// many real-firmware VMs this machine runs with their intervals kept: bench/sim.ts.
//
// VM time is measured inside the VM host: every call into the WASM VM (its scheduler tick, Jacdac
// frames and socket events from the host) is timed. The tick in which the firmware logs
// "citymeter: frame" is the one that closes the interval: sample → encode → enqueue.
import { spawn } from "node:child_process"
import { existsSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createRequire } from "node:module"
import { randomBytes } from "node:crypto"
import { SimMeter } from "../sim/src/meter.js"
import { paths } from "../sim/src/paths.js"
import { BridgeProcess, MosquittoProcess } from "../testkit/infra.js"

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
    water: "register", // the baseline the benchmark has always measured
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

export interface FirmwareResult {
  bytecode: number
  helloBytecode?: number
  wasmMsPerInterval: number
  closeTickMs: number
  sealedTickMs: number
  cpuMsPerInterval: number
}

const BENCH_TOKEN = randomBytes(8).toString("hex")

/** The closing tick of a meter that seals its frames, registered with its key first. */
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
    probes.push(await startProbe(`bench-fw-${run}-0`, mosq.port, intervalS))
    await sleep(quick ? 1500 : 2500) // connect, birth, first frames
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

    return {
      bytecode,
      helloBytecode,
      wasmMsPerInterval,
      closeTickMs,
      sealedTickMs,
      cpuMsPerInterval,
    }
  } finally {
    for (const p of probes) await p.meter.stop()
    await bridge.stop()
    await mosq.stop()
    rmSync(mosq.dir, { recursive: true, force: true })
  }
}
