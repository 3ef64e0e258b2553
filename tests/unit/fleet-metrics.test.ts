// The gauges the alert rules read at scrape time (bridge/src/metrics.ts, issue 26 item 4): the fleet
// figures from the data tier in one read per scrape, and the embedded engine's free disk space.
import { tmpdir } from "node:os"
import { expect, test } from "vitest"
import { createMetrics } from "../../bridge/src/metrics.js"
import { diskOf, embeddedDataDir } from "../../bridge/src/service.js"

const sample = (text: string, name: string) =>
  text
    .split("\n")
    .filter((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`))
    .join("\n")

test("fleet gauges: one read per scrape, the last value kept when the data tier fails", async () => {
  const m = createMetrics()
  let reads = 0
  let fail = false
  m.setFleetSource(async () => {
    reads++
    if (fail) throw new Error("data tier down")
    return { meters: 100, inactive: 7, dropped: 12, unstored: 2 }
  })
  const text = await m.registry.metrics()
  expect(reads).toBe(1)
  expect(sample(text, "citymeter_meters")).toBe("citymeter_meters 100")
  expect(sample(text, "citymeter_meters_inactive")).toBe("citymeter_meters_inactive 7")
  expect(sample(text, "citymeter_meters_dropped_frames")).toBe("citymeter_meters_dropped_frames 12")
  expect(sample(text, "citymeter_meters_unstored")).toBe("citymeter_meters_unstored 2")
  fail = true
  await new Promise((r) => setTimeout(r, 1100))
  const after = await m.registry.metrics()
  expect(reads).toBe(2)
  expect(sample(after, "citymeter_meters")).toBe("citymeter_meters 100")
})

test("data directory gauges: free and size of its filesystem; no sample without a data directory", async () => {
  const m = createMetrics()
  expect(sample(await m.registry.metrics(), "citymeter_data_dir_free_bytes")).toBe("")
  m.setDiskSource(async () => ({ path: "/var/lib/citymeter", freeBytes: 5e9, sizeBytes: 1e11 }))
  const text = await m.registry.metrics()
  expect(sample(text, "citymeter_data_dir_free_bytes")).toBe(
    'citymeter_data_dir_free_bytes{path="/var/lib/citymeter"} 5000000000',
  )
  expect(sample(text, "citymeter_data_dir_size_bytes")).toBe(
    'citymeter_data_dir_size_bytes{path="/var/lib/citymeter"} 100000000000',
  )
})

test("the data directory is a pglite:<dir> URL's; none for PostgreSQL or memory", () => {
  expect(embeddedDataDir("pglite:./data")).toBe("./data")
  expect(embeddedDataDir("pglite:memory")).toBeUndefined()
  expect(embeddedDataDir("pglite:")).toBeUndefined()
  expect(embeddedDataDir("postgres://localhost/test")).toBeUndefined()
})

test("diskOf: the filesystem's free and total bytes (statfs)", async () => {
  const d = await diskOf(tmpdir())
  expect(d.path).toBe(tmpdir())
  expect(d.sizeBytes).toBeGreaterThan(0)
  expect(d.freeBytes).toBeGreaterThanOrEqual(0)
  expect(d.freeBytes).toBeLessThanOrEqual(d.sizeBytes)
})
