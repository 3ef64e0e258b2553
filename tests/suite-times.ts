// A vitest reporter that prints each test file's wall time, slowest first, when a run ends, so that
// CI's output says where its minutes went (issue 22). A file's wall time is its import and set-up
// (vitest's diagnostics) plus its run as measured here, hooks and waits included.
import { performance } from "node:perf_hooks"
import { relative } from "node:path"
import type { Reporter, TestModule } from "vitest/node"

export default class SuiteTimes implements Reporter {
  private readonly started = new Map<string, number>()
  private readonly wallMs = new Map<string, number>()
  private runStart = performance.now()

  onTestRunStart(): void {
    this.runStart = performance.now()
    this.started.clear()
    this.wallMs.clear()
  }

  onTestModuleStart(module: TestModule): void {
    this.started.set(module.moduleId, performance.now())
  }

  onTestModuleEnd(module: TestModule): void {
    const start = this.started.get(module.moduleId)
    if (start !== undefined) this.wallMs.set(module.moduleId, performance.now() - start)
  }

  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    if (modules.length === 0) return
    const rows = modules
      .map((m) => ({
        project: m.project.name,
        file: relative(process.cwd(), m.moduleId),
        tests: [...m.children.allTests()].length,
        state: m.state(),
        wallS: wallMs(m, this.wallMs.get(m.moduleId)) / 1000,
      }))
      .sort((a, b) => b.wallS - a.wallS)
    const sum = rows.reduce((s, r) => s + r.wallS, 0)
    const lines = [
      "",
      `suite wall times, slowest first (${rows.length} files, ${sum.toFixed(1)} s summed, ` +
        `${((performance.now() - this.runStart) / 1000).toFixed(1)} s elapsed):`,
      ...rows.map(
        (r) =>
          `  ${r.wallS.toFixed(1).padStart(7)} s  ${r.project.padEnd(7)} ${String(r.tests).padStart(3)} tests  ` +
          `${r.state === "passed" ? "" : `[${r.state}] `}${r.file}`,
      ),
      "",
    ]
    process.stdout.write(lines.join("\n") + "\n")
  }
}

function wallMs(m: TestModule, runMs: number | undefined): number {
  const d = m.diagnostic()
  const before = d.environmentSetupDuration + d.prepareDuration + d.setupDuration + d.collectDuration
  return before + (runMs ?? d.duration)
}
