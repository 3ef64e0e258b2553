// Shared by the fault-injection suites: a driven meter, what its firmware generated
// (from its console), and the comparison with what the API returns.
import { spawn } from "node:child_process"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { expect } from "vitest"
import { SimMeter } from "../sim/src/meter.js"
import { BridgeProcess, freePort } from "../testkit/infra.js"
import { waitFor, type ApiReading } from "./helpers.js"

export type Row = ApiReading

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** A bridge process (not started) with its embedded broker on a free port and a fresh PGlite directory. */
export async function embeddedBridge(): Promise<{ bridge: BridgeProcess; port: number }> {
  const port = await freePort()
  const bridge = new BridgeProcess({
    EMBEDDED_MQTT_PORT: String(port),
    DATABASE_URL: `pglite:${mkdtempSync(join(tmpdir(), "cm-pglite-"))}`,
    CITYMETER_MODE: "demo",
  })
  return { bridge, port }
}

/** A meter whose flow and energy counters advance steadily, like real consumption. */
export function drivenMeter(meterId: string, mqttPort: number) {
  const dir = mkdtempSync(join(tmpdir(), "cm-flash-"))
  const meter = new SimMeter({
    meterId,
    // a register that runs on while the meter is off: these faults must lose nothing at all
    // (tests/system/reboot-counts.test.ts is the pulse meter that loses what it cannot count)
    water: "register",
    flashFile: join(dir, "flash.bin"),
    settings: { MQTT_HOST: "127.0.0.1", MQTT_PORT: mqttPort, INTERVAL_S: 1, BATCH: 2 },
  })
  const counters = { water: 50_000, energy: 1_000 }
  meter.setWater({ volumeMl: counters.water })
  meter.setElectricity({ energyWh: counters.energy, powerW: 500, voltageDv: 2300 })
  meter.setPressure(300_000)
  let timer: NodeJS.Timeout | undefined
  // consumption starts once the meter has read its counters (a new meter adopts their values)
  const startDriving = () => {
    timer = setInterval(() => {
      counters.water += 37 // 22.2 L/min
      counters.energy += 1
      meter.setWater({ volumeMl: counters.water })
      meter.setElectricity({ energyWh: counters.energy })
    }, 100)
  }
  return { meter, counters, initial: { ...counters }, startDriving, stopDriving: () => clearInterval(timer) }
}

/** Frames the firmware made, from its console: "citymeter: frame boot=B seq=S n=N". */
export function generated(meter: SimMeter): Map<string, number> {
  const frames = new Map<string, number>()
  for (const l of meter.lines) {
    const m = /frame boot=(\d+) seq=(\d+) n=(\d+)/.exec(l)
    if (m) frames.set(`${m[1]}/${m[2]}`, Number(m[3]))
  }
  return frames
}

/**
 * The frames `gen` (taken before `rows` were read: a meter still running makes more meanwhile)
 * against the stored rows of those frames.
 */
export function compare(meter: SimMeter, rows: Row[], gen = generated(meter)) {
  const generatedIntervals = [...gen.values()].reduce((a, b) => a + b, 0)
  const keys = rows.filter((r) => gen.has(`${r.boot}/${r.seq}`)).map((r) => `${r.boot}/${r.seq}/${r.idx}`)
  const unique = new Set(keys)
  let missing = 0
  for (const [frame, n] of gen) for (let i = 0; i < n; i++) if (!unique.has(`${frame}/${i}`)) missing++
  return { generated: generatedIntervals, stored: keys.length, duplicates: keys.length - unique.size, missing }
}

/**
 * Waits until every frame the meter has generated is stored; with `snapshot`, the frames it had
 * generated when the snapshot was taken (a meter still running makes more meanwhile).
 */
export async function caughtUp(
  meter: SimMeter,
  bridge: BridgeProcess,
  meterId: string,
  timeoutMs = 60_000,
  snapshot?: Map<string, number>,
) {
  await waitFor(
    "every generated frame stored",
    async () => {
      const gen = snapshot ?? generated(meter)
      if (!bridge.apiUrl) return false
      let rows: Row[]
      try {
        rows = (await bridge.get<{ readings: Row[] }>(`/meters/${meterId}/readings`)).readings
      } catch {
        return false
      }
      const stored = new Set(rows.map((r) => `${r.boot}/${r.seq}`))
      return gen.size > 0 && [...gen.keys()].every((k) => stored.has(k))
    },
    timeoutMs,
    250,
  ).catch(async (e) => {
    const metrics = bridge.apiUrl ? await (await fetch(`${bridge.apiUrl}/metrics`)).text().catch(() => "") : ""
    writeFileSync(`/tmp/fault-metrics-${meterId}.txt`, metrics)
    writeFileSync(
      `/tmp/fault-debug-${meterId}.log`,
      `bridge output:\n${bridge.output.slice(-100).join("\n")}\nmeter:\n${meter.lines.slice(-400).join("\n")}`,
    )
    throw e
  })
}

/** Frames the (current) bridge process received again after storing them: acked, not stored. */
export async function redelivered(bridge: BridgeProcess): Promise<number> {
  const text = await (await fetch(`${bridge.apiUrl}/metrics`)).text()
  return Number(/^citymeter_frames_duplicate_total (\d+)/m.exec(text)?.[1] ?? 0)
}

export function checkContinuity(rows: Row[], initial: { water: number; energy: number }) {
  const sorted = [...rows].sort((a, b) => a.boot - b.boot || a.seq - b.seq || a.idx - b.idx)
  expect(sorted[0].waterTotalMl - sorted[0].volumeMl).toBe(initial.water)
  expect(sorted[0].energyTotalWh - sorted[0].energyWh).toBe(initial.energy)
  for (let i = 1; i < sorted.length; i++) {
    expect(sorted[i].waterTotalMl, `water total at row ${i}`).toBe(sorted[i - 1].waterTotalMl + sorted[i].volumeMl)
    expect(sorted[i].energyTotalWh, `energy total at row ${i}`).toBe(sorted[i - 1].energyTotalWh + sorted[i].energyWh)
  }
  return sorted
}

/** Starts the driven meter and waits until its first frames are stored. */
export async function startDriven(d: ReturnType<typeof drivenMeter>, bridge: BridgeProcess, meterId: string) {
  await d.meter.start()
  await waitFor("first frame", async () => generated(d.meter).size >= 1, 30_000)
  d.startDriving()
  await waitFor("frames", async () => generated(d.meter).size >= 3, 30_000)
  await caughtUp(d.meter, bridge, meterId)
}

/** Power loss: the VM stops dead, boots again from its flash, and catches up. */
export async function powerLoss(meter: SimMeter, bridge: BridgeProcess, meterId: string) {
  await meter.stop()
  await sleep(3000)
  const boots = () => new Set([...generated(meter).keys()].map((k) => k.split("/")[0]))
  const before = boots().size
  await meter.start()
  await waitFor("frames after reboot", async () => boots().size > before, 30_000)
  await sleep(3000)
  await caughtUp(meter, bridge, meterId)
}

/** Compares what the firmware generated with what the API returns; prints and checks the counts. */
export async function finalCheck(
  label: string,
  t0: number,
  d: ReturnType<typeof drivenMeter>,
  bridge: BridgeProcess,
  meterId: string,
) {
  const gen = generated(d.meter)
  // the meter runs on: a frame it made just now may still be on its way (seen in CI: one frame of
  // two intervals counted missing), so the frames of this snapshot are waited for before comparing
  await caughtUp(d.meter, bridge, meterId, 60_000, gen)
  const rows = (await bridge.get<{ readings: Row[] }>(`/meters/${meterId}/readings`)).readings
  const counts = compare(d.meter, rows, gen)
  console.log(
    `fault run (${label}): generated ${counts.generated}, stored ${counts.stored}, duplicates ${counts.duplicates}, missing ${counts.missing}, backfilled ${rows.filter((r) => r.backfill).length}, redelivered since the last bridge restart ${await redelivered(bridge)}, ${Math.round((Date.now() - t0) / 1000)} s`,
  )
  expect(counts.missing).toBe(0)
  expect(counts.duplicates).toBe(0)
  expect(counts.stored).toBe(counts.generated)
  checkContinuity(rows, d.initial)
  return rows
}

/** What a bridge run with CITYMETER_FAULT_KILL_IN_BATCH said before it died. */
export interface KilledInBatch {
  signal: NodeJS.Signals | null
  /** Frames in the batch it died in, and the (meter/boot/seq) of its readings and alarm frames. */
  batch: number
  frames: string[]
  output: string[]
}

/**
 * Starts the bridge (bridge/src/main.ts) with CITYMETER_FAULT_KILL_IN_BATCH=minBatch. `ready`:
 * it is subscribed; `died`: it has killed itself inside a batch transaction (after the batch's
 * writes, before its commit).
 */
export function bridgeKilledInBatch(
  env: Record<string, string>,
  minBatch: number,
  timeoutMs = 90_000,
): { ready: Promise<void>; died: Promise<KilledInBatch> } {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), "..")
  const proc = spawn(process.execPath, ["--import", "tsx", join(root, "bridge/src/main.ts")], {
    cwd: root,
    env: { ...process.env, HTTP_PORT: "0", ...env, CITYMETER_FAULT_KILL_IN_BATCH: String(minBatch) },
    stdio: ["ignore", "pipe", "pipe"],
  })
  let text = ""
  let onReady: () => void
  const ready = new Promise<void>((r) => (onReady = r))
  const onData = (b: Buffer) => {
    text += String(b)
    if (/API http/.test(text)) onReady()
  }
  proc.stdout!.on("data", onData)
  proc.stderr!.on("data", onData)
  const timer = setTimeout(() => proc.kill("SIGTERM"), timeoutMs)
  const died = new Promise<NodeJS.Signals | null>((r) => proc.once("close", (_code, sig) => r(sig))).then((signal) => {
    clearTimeout(timer)
    const output = text.split("\n").filter((l) => l.trim())
    const line = output.find((l) => l.includes("fault injection: SIGKILL inside a batch"))
    if (!line) throw new Error(`the bridge did not die in a batch (${signal}):\n${output.slice(-20).join("\n")}`)
    const { batch, frames } = JSON.parse(line.slice(line.indexOf("{"))) as { batch: number; frames: string[] }
    return { signal, batch, frames, output }
  })
  return { ready: Promise.race([ready, died.then(() => {})]), died }
}
