import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["tests/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    // VMs run in-process (no devtools ports), so files can run in parallel; two cores in CI.
    maxWorkers: 2,
    fileParallelism: true,
  },
})
