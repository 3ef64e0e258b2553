import { configDefaults, defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    testTimeout: 120_000,
    hookTimeout: 60_000,
    // no MODE=test in the environment the bridges under test inherit (tests/setup-env.ts)
    setupFiles: ["tests/setup-env.ts"],
    // VMs run in-process (no devtools ports), so files can run in parallel; two cores in CI.
    maxWorkers: 2,
    fileParallelism: true,
    projects: [
      // brokers, databases, processes and firmware VMs, many of them timed in real time
      {
        extends: true,
        test: { name: "node", include: ["tests/**/*.test.ts"], exclude: [...configDefaults.exclude, "tests/board/**"] },
      },
      // the emulated RP2040 (testkit/rp2040): CPU-bound for minutes, so `npm test` runs it after the
      // node project rather than beside the suites that time real meters (seen: an alarm test timed
      // out while emulators took both cores)
      { extends: true, test: { name: "board", include: ["tests/board/**/*.test.ts"] } },
    ],
  },
})
