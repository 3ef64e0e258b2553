// The dashboard's first load: Debian's Chromium opens the page on a bridge whose
// registry holds 10,000 meters, until the fleet list is drawn and answers a search. Baseline: the
// same load with an empty registry, in the same run.
import { chromium } from "playwright-core"
import { startService } from "../bridge/src/service.js"
import type { SqlStore } from "../bridge/src/store/sql-store.js"
import { buildWeb } from "../scripts/build-web.js"

async function firstLoad(meters: number) {
  const svc = await startService({
    demo: true,
    databaseUrl: "pglite:memory",
    embeddedMqttPort: 0,
    httpPort: 0,
    clientId: `bench-dash-${process.pid}`,
  })
  try {
    if (meters > 0)
      await (svc.store as SqlStore).db.query(
        `INSERT INTO meters (meter_id, online, first_seen, last_seen, firmware, board, boot, queued, dropped, lat, lon, district)
         SELECT 'm-' || lpad(i::text, 6, '0'), i % 7 <> 0, now(), now() - (i || ' s')::interval, 'citymeter-fw 0.2.0',
           'esp32c3_bare', 1000 + i, i % 5, i % 3, 48.1 + (i % 100) * 0.001, 16.3 + (i / 100) * 0.001, 'D' || (i % 23)
         FROM generate_series(1, $1::int) AS i`,
        [meters],
      )
    const browser = await chromium.launch({
      executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
      args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"],
    })
    try {
      const page = await browser.newPage()
      let bytes = 0
      page.on("requestfinished", async (r) => {
        const s = await r.sizes().catch(() => undefined)
        if (s) bytes += s.responseBodySize + s.responseHeadersSize
      })
      const t0 = performance.now()
      await page.goto(`${svc.httpUrl}/`)
      await page.waitForFunction(
        (n) => document.querySelector(".summary")?.textContent?.startsWith(`${n} meters`),
        meters,
      )
      const listed = performance.now() - t0
      // interactive: a search over the whole fleet is answered (the list redraws 120 ms after typing)
      const t1 = performance.now()
      await page.getByLabel("Search meters").fill("m-000099")
      await page.waitForFunction(
        (want) => document.querySelector(".summary")?.textContent?.includes(want),
        `${meters > 0 ? 1 : 0} match;`,
      )
      const search = performance.now() - t1
      await page.close()
      return { listed, search, interactive: listed + search, bytes }
    } finally {
      await browser.close()
    }
  } finally {
    await svc.stop()
  }
}

export async function dashboardBench(quick: boolean) {
  await buildWeb()
  const n = quick ? 1000 : 10_000
  const base = await firstLoad(0)
  const big = await firstLoad(n)
  const ms = (x: number) => `${x.toFixed(0)} ms`
  console.log(`\ndashboard first load (Chromium, PGlite; baseline: an empty registry)`)
  console.log(
    `  empty:        list ${ms(base.listed)}, search ${ms(base.search)}, ${(base.bytes / 1024).toFixed(0)} KiB`,
  )
  console.log(
    `  ${n} meters: list ${ms(big.listed)}, search ${ms(big.search)}, ${(big.bytes / 1024).toFixed(0)} KiB — ` +
      `time to interactive ${(big.interactive / base.interactive).toFixed(2)}x, bytes ${(big.bytes / base.bytes).toFixed(1)}x the baseline`,
  )
}
