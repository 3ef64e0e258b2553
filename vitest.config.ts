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
    // VMs run in-process (no devtools ports), so files run in parallel. On CI's two cores
    // (scripts/test-all.ts) unit, store and system once kept the CPU 40 % busy at two files at a
    // time (612 s → 426 s at four). They have since grown CPU-bound: at four, 5,925 s of suite time
    // ran in 1,527 s, each suite 3–5× its time alone (store.test.ts 53 s alone, 244 s there), and
    // suites that wait on meters timed out; so three. The emulated board is CPU-bound: two.
    // TEST_WORKERS overrides both (a project's own maxWorkers beats --maxWorkers).
    maxWorkers: Number(process.env.TEST_WORKERS) || 3,
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
      // a bound of the product's own timing under load (a frame's commit while the worst reads run):
      // one file at a time, after the layers above, so that what it measures is the bridge and not
      // the CPU the other suites take (seen: a 0.07 s wait alone, 2.04 s beside three other files)
      {
        extends: true,
        test: { name: "paced", include: ["tests/paced/**/*.test.ts"], maxWorkers: 1 },
      },
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
