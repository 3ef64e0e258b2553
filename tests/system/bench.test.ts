// CI smoke test of the benchmarks: `npm run bench -- --quick` runs to the end and prints
// every benchmark's baseline and ratio. No timing assertions: the machines are shared and noisy.
import { spawn } from "node:child_process"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { expect, test } from "vitest"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..")

test("npm run bench -- --quick exits 0 and prints each baseline with its ratio", async () => {
  const p = spawn(process.execPath, ["--import", "tsx", join(root, "bench/main.ts"), "--quick"], {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
  })
  let out = ""
  p.stdout.on("data", (b) => (out += b))
  p.stderr.on("data", (b) => (out += b))
  const code = await new Promise<number | null>((r) => p.on("close", r))
  expect(code, out).toBe(0)
  // frame size: one row per batch size, both ratios; citymeter is the smallest
  for (const n of [1, 4, 16]) {
    const m = new RegExp(`^\\s+${n}\\s+(\\d+)\\s+(\\d+)\\s+(\\d+)\\s+(\\d+)\\s+([\\d.]+)×\\s+([\\d.]+)×$`, "m").exec(
      out,
    )
    expect(m, `frame size row for ${n} intervals\n${out}`).not.toBeNull()
    const [cm, sealed, sp, json] = [m![1], m![2], m![3], m![4]].map(Number)
    expect(sp).toBeGreaterThan(cm)
    expect(json).toBeGreaterThan(cm)
    // sealing adds the 8-byte tag and a few bytes of envelope (≤ 120 B at 4 intervals)
    expect(sealed - cm).toBeGreaterThanOrEqual(8)
    if (n === 4) expect(sealed).toBeLessThanOrEqual(120)
  }
  // sealing cost on the bridge and in the VM, each against its open baseline
  expect(out).toMatch(/^sealed frame\s+[\d,]+ frames\/s\s+\([\d.]+× of open/m)
  expect(out).toMatch(/sealing in the VM: closing tick .* ratio \d+\.\d+×/)
  // ingest: baseline and bridge rates and their ratio, for both data tiers
  for (const engine of ["PostgreSQL", "PGlite"])
    expect(out).toMatch(new RegExp(`^${engine}.*\\s\\d+ frames/s\\s+\\d+ frames/s\\s+\\d+\\.\\d{3}$`, "m"))
  // SensorThings $filter: each request with its baseline and the ratio, on both data tiers
  for (const engine of ["PostgreSQL", "PGlite"])
    expect(out).toMatch(
      new RegExp(`^${engine}\\s+one Datastream, one day .*\\s\\d+\\.\\d\\s+\\d+\\.\\d\\s+\\d+\\.\\d{2}$`, "m"),
    )
  // firmware: size, time per interval against its baseline, VM count against its baseline
  expect(out).toMatch(/^bytecode: \d+ B/m)
  expect(out).toMatch(/baseline: the interval, 1000 ms; ratio \(VM duty cycle\) \d+\.\d+%/)
  // VMs per machine, from what the bridge stored: count against its baseline, CPU and RSS per VM
  expect(out).toMatch(/real-firmware VMs with every interval kept .*: \d+.*baseline: 1 VM; ratio \d+×/)
  // compiled bridge against tsx: start time, idle RSS and CPU per frame, each with its ratio
  for (const name of [
    "start → /healthz \\(ms\\)",
    "start → /healthz, CPU \\(ms\\)",
    "idle RSS \\(MiB\\)",
    "CPU per frame, steady ingest \\(µs\\)",
  ])
    expect(out).toMatch(new RegExp(`^${name}\\s+[\\d.]+\\s+[\\d.]+\\s+\\d+\\.\\d{2}$`, "m"))
  const perVm = /per VM at \d+ VMs: CPU ([\d.]+) ms\/s .*, RSS (-?[\d.]+) MiB/.exec(out)
  expect(perVm, out).not.toBeNull()
  expect(Number(perVm![1])).toBeGreaterThan(0)
  expect(Number(perVm![2])).toBeGreaterThan(0) // a VM costs memory (quick mode once printed a negative slope)
}, 300_000)
