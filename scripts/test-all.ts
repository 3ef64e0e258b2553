// `npm test`: every check CI runs, in order, stopping at the first that fails. Each step's wall time
// is printed when it ends and again in a table at the end, so CI's output says where its minutes
// went (issue 22); vitest adds each test file's time (tests/suite-times.ts).
//
// typecheck, lint and the firmware's VM tests are single-threaded and independent, so they run side
// by side (two cores in CI), their output held until each ends; the firmware's tests time nothing
// against the wall clock beyond their -T timeouts. The vitest layers and the emulated board run one
// after another: the system suites time real meters and are not to share the machine with the
// emulators (tests/README.md).
import { spawn } from "node:child_process"
import { performance } from "node:perf_hooks"

interface Step {
  name: string
  script: string
}

/** Steps in order; an inner list runs side by side. */
const PLAN: (Step | Step[])[] = [
  { name: "build", script: "npm run build" },
  { name: "build:boards", script: "npm run build:boards" },
  [
    { name: "typecheck", script: "npm run typecheck" },
    { name: "lint", script: "npm run lint" },
    { name: "test:firmware", script: "npm run test:firmware" },
  ],
  { name: "test:unit+store+system", script: "vitest run --project unit --project store --project system" },
  { name: "test:paced", script: "npm run test:paced" },
  { name: "test:board", script: "npm run test:board" },
]

interface Outcome {
  name: string
  seconds: number
  code: number
}

const running = new Set<ReturnType<typeof spawn>>()
for (const signal of ["SIGINT", "SIGTERM"] as const)
  process.on(signal, () => {
    for (const child of running) child.kill(signal)
    process.exit(130)
  })

/** Runs one step through the shell (npm puts node_modules/.bin on PATH); `held` buffers its output. */
function run(step: Step, held: boolean): Promise<Outcome> {
  const t0 = performance.now()
  const child = spawn(step.script, { shell: true, stdio: held ? ["ignore", "pipe", "pipe"] : "inherit" })
  running.add(child)
  const out: Buffer[] = []
  child.stdout?.on("data", (b: Buffer) => out.push(b))
  child.stderr?.on("data", (b: Buffer) => out.push(b))
  return new Promise((resolve) => {
    child.on("close", (code, signal) => {
      running.delete(child)
      if (held) process.stdout.write(Buffer.concat(out))
      const o = { name: step.name, seconds: (performance.now() - t0) / 1000, code: code ?? (signal ? 128 : 1) }
      console.log(
        `\n[test-all] ${o.name}: ${o.code === 0 ? "ok" : `FAILED (exit ${o.code})`} in ${o.seconds.toFixed(1)} s\n`,
      )
      resolve(o)
    })
  })
}

const t0 = performance.now()
const done: Outcome[] = []
let failed = false
for (const item of PLAN) {
  const group = Array.isArray(item) ? item : [item]
  const outcomes = await Promise.all(group.map((s) => run(s, group.length > 1)))
  done.push(...outcomes)
  if (outcomes.some((o) => o.code !== 0)) {
    failed = true
    break
  }
}

const total = (performance.now() - t0) / 1000
console.log("[test-all] step wall times:")
for (const o of done)
  console.log(`  ${o.seconds.toFixed(1).padStart(7)} s  ${o.code === 0 ? "ok    " : "FAILED"}  ${o.name}`)
console.log(`  ${total.toFixed(1).padStart(7)} s  total${failed ? " (stopped at the first failure)" : ""}`)
process.exitCode = failed ? 1 : 0
