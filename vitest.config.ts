import { defineConfig } from "vitest/config"

// Tests by layer (tests/README.md): unit (pure), store (real database engines in process), system
// (brokers, processes, firmware VMs), board (the emulated RP2040). `npm test` runs them all in that
// order; `npm run test:unit` runs the unit layer alone.
export default defineConfig({
  test: {
    testTimeout: 120_000,
    hookTimeout: 60_000,
    // no MODE=test in the environment the bridges under test inherit (tests/setup-env.ts)
    setupFiles: ["tests/setup-env.ts"],
    // VMs run in-process (no devtools ports), so files run in parallel. Measured on CI's two cores
    // (scripts/test-all.ts): unit, store and system keep the CPU about 40 % busy at two files at a
    // time, most suites waiting on real meters, so four run at once (612 s → 426 s, all passing);
    // the emulated board is CPU-bound, so two. TEST_WORKERS overrides both (a project's own
    // maxWorkers beats --maxWorkers).
    maxWorkers: Number(process.env.TEST_WORKERS) || 4,
    fileParallelism: true,
    // each file's wall time, slowest first, after every run (CI's output keeps it)
    reporters: ["default", "./tests/suite-times.ts"],
    projects: [
      // pure functions: no database, broker, process or VM
      { extends: true, test: { name: "unit", include: ["tests/unit/**/*.test.ts"] } },
      // the Store contract and what reads it, against PostgreSQL and PGlite, in process
      { extends: true, test: { name: "store", include: ["tests/store/**/*.test.ts"] } },
      // brokers, databases, processes and firmware VMs, many of them timed in real time
      { extends: true, test: { name: "system", include: ["tests/system/**/*.test.ts"] } },
      // the emulated RP2040 (testkit/rp2040): CPU-bound for minutes, so `npm test` runs it after the
      // other layers rather than beside the suites that time real meters (seen: an alarm test timed
      // out while emulators took both cores)
      {
        extends: true,
        test: {
          name: "board",
          include: ["tests/board/**/*.test.ts"],
          maxWorkers: Number(process.env.TEST_WORKERS) || 2,
        },
      },
    ],
  },
})
