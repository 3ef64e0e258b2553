// The open-data export of a month, opt-in, not CI:
// `npm run bench:export -- [meters] [--skip-old] [--pglite] [--seed-only]` (default 2,000 meters).
// Seeds meters × one month (January 2026, 31 days) of 15-minute readings straight into PostgreSQL
// (a private schema, dropped afterwards; INSERT … SELECT generate_series, no ingest path; with
// --pglite, PGlite in memory; --seed-only keeps the schema for probing the query by hand), then
// fetches /export/readings/2026-01.csv and .ndjson over real HTTP from the bridge's app (a listener
// in this process; curl in its own process hashes the body) by the streamed query
// (store/export-rows.ts) and by the former path (one query per meter and page, perMeterLines), same
// data, same run: wall time, rows/s, bytes, sha256 (equal or the run fails), and the process's RSS
// peak while each file streams (sampled every 50 ms).
import { execFile } from "node:child_process"
import { randomBytes } from "node:crypto"
import { buildApp } from "../bridge/src/api.js"
import { createMetrics } from "../bridge/src/metrics.js"
import { openPglite, openPostgres } from "../bridge/src/store/engines.js"
import { exportSql } from "../bridge/src/store/export-rows.js"
import type { SqlStore } from "../bridge/src/store/sql-store.js"
import { PG_URL } from "../testkit/services.js"
import { formerExportPath } from "../testkit/export-paths.js"

const args = process.argv.slice(2)
const METERS = Number(args.find((a) => /^\d+$/.test(a)) ?? 2000)
const SKIP_OLD = args.includes("--skip-old")
/** PGlite in memory instead of PostgreSQL: its keyset batches (store/export-rows.ts). */
const PGLITE = args.includes("--pglite")
/** Only seed, and keep the schema (its name is printed), for probing the query by hand. */
const SEED_ONLY = args.includes("--seed-only")
const M0 = "2026-01-01T00:00:00Z"
const PER_METER = 31 * 96
const MiB = 2 ** 20

const COLUMNS = `meter_id, ts, interval_s, boot, seq, idx, volume_ml, reverse_ml, water_total_ml, energy_wh,
  energy_total_wh, power_w, voltage_dv, pressure_min_pa, pressure_avg_pa, pressure_max_pa, time_synced, backfill`
// water meters (even) and electricity meters (odd), values varying by meter and interval
const VALUES = `'exp-' || lpad(m::text, 6, '0'), $1::timestamptz + s * interval '15 minutes', 900, 1, s / 4 + 1, s % 4,
  CASE WHEN m % 2 = 0 THEN (m * 7 + s) % 23 END, CASE WHEN m % 2 = 0 THEN 0 END,
  CASE WHEN m % 2 = 0 THEN 100000 + m * 11 * s END, CASE WHEN m % 2 = 1 THEN (m + s) % 31 END,
  CASE WHEN m % 2 = 1 THEN 5000000 + m * 17 * s END, CASE WHEN m % 2 = 1 THEN (m * 13 + s * 7) % 4000 - 500 END,
  CASE WHEN m % 2 = 1 THEN 2250 + (m + s) % 100 END, CASE WHEN m % 2 = 0 THEN 290000 + (m + s) % 997 END,
  CASE WHEN m % 2 = 0 THEN 300000 + (m * 3 + s) % 997 END, CASE WHEN m % 2 = 0 THEN 310000 + (m + s * 5) % 997 END,
  s % 97 <> 0, s % 89 = 0`

async function seed(store: SqlStore) {
  const db = store.db
  await db.query(
    `INSERT INTO meters (meter_id, online, first_seen, last_seen, boot, interval_s, batch)
     SELECT 'exp-' || lpad(m::text, 6, '0'), true, $1, $1, 1, 900, 4 FROM generate_series(1, $2) m`,
    [M0, METERS],
  )
  await store.ensurePartitions(new Date(M0), new Date(Date.parse(M0) + PER_METER * 900_000))
  for (let lo = 1; lo <= METERS; lo += 500)
    await db.query(
      `INSERT INTO readings (${COLUMNS}) SELECT ${VALUES}
       FROM generate_series($2::int, $3::int) m, generate_series(0, $4::int - 1) s`,
      [M0, lo, Math.min(METERS, lo + 499), PER_METER],
    )
  await db.query(`VACUUM ANALYZE`)
}

/**
 * GET url over HTTP by curl in a process of its own (as a harvester elsewhere would: the client
 * takes none of this process's CPU), the body hashed as it arrives; wall time, bytes, lines,
 * sha256, and this process's RSS peak meanwhile.
 */
async function fetchFile(url: string) {
  const rss0 = process.memoryUsage().rss
  let peak = rss0
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50)
  const t0 = performance.now()
  const sh = `set -o pipefail; curl -sS --fail '${url}' | tee >(wc -l >&2) | sha256sum | cut -c1-64`
  const out = await new Promise<{ sha256: string; lines: string; bytes: number }>((resolve, reject) => {
    execFile("bash", ["-c", sh.replace("wc -l", "wc -lc")], { maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${url}: ${stderr || err.message}`))
      const [lines, bytes] = stderr.trim().split(/\s+/)
      resolve({ sha256: stdout.trim(), lines, bytes: Number(bytes) })
    })
  })
  const s = (performance.now() - t0) / 1000
  clearInterval(sampler)
  peak = Math.max(peak, process.memoryUsage().rss)
  return { s, ...out, lines: Number(out.lines), rssBeforeMiB: rss0 / MiB, rssPeakMiB: peak / MiB }
}

const schema = `bench_${randomBytes(4).toString("hex")}`
const store = (PGLITE ? await openPglite(undefined) : await openPostgres(PG_URL, { schema })) as SqlStore
try {
  const t0 = performance.now()
  await seed(store)
  const rows = METERS * PER_METER
  console.log(
    `seeded ${METERS} meters × ${PER_METER} readings = ${rows} rows in ${((performance.now() - t0) / 1000).toFixed(0)} s`,
  )
  if (SEED_ONLY) {
    console.log(`kept schema ${schema}`)
    await store.close()
    process.exit(0)
  }
  const size = await store.db.query<{ b: string }>(`SELECT pg_total_relation_size('readings_p202601') AS b`)
  console.log(`January's partition: ${(Number(size.rows[0].b) / MiB).toFixed(0)} MiB with its indexes`)
  const plan = await store.db.query<{ "QUERY PLAN": string }>(`EXPLAIN ${exportSql("csv")}`, [
    M0,
    "2026-02-01T00:00:00Z",
  ])
  console.log(plan.rows.map((r) => r["QUERY PLAN"]).join("\n"))
  const apps = { streamed: buildApp({ store, metrics: createMetrics() }) }
  const old = buildApp({ store: formerExportPath(store), metrics: createMetrics() })
  const results: Record<string, Awaited<ReturnType<typeof fetchFile>> & { rowsPerS: number }> = {}
  const bases = new Map<typeof old, string>()
  for (const app of [apps.streamed, old]) bases.set(app, await app.listen({ port: 0, host: "127.0.0.1" }))
  const run = async (name: string, app: typeof old, format: string) => {
    const base = bases.get(app)!
    global.gc?.()
    const r = await fetchFile(`${base}/export/readings/2026-01.${format}`)
    const out = { ...r, rowsPerS: Math.round(rows / r.s) }
    results[`${name} ${format}`] = out
    const mb = (out.bytes / MiB).toFixed(0)
    console.log(
      `${name.padEnd(9)} ${format.padEnd(6)} ${out.s.toFixed(1)} s, ${out.rowsPerS} rows/s, ${mb} MiB, ` +
        `${out.lines} lines, RSS ${out.rssBeforeMiB.toFixed(0)} → peak ${out.rssPeakMiB.toFixed(0)} MiB, ${out.sha256.slice(0, 16)}`,
    )
  }
  for (const format of ["csv", "ndjson"]) {
    await run("streamed", apps.streamed, format)
    if (!SKIP_OLD) {
      await run("per-meter", old, format)
      const [a, b] = [results[`streamed ${format}`], results[`per-meter ${format}`]]
      if (a.sha256 !== b.sha256) throw new Error(`${format}: the two paths' bytes differ`)
      console.log(
        `${format}: identical bytes; streamed / per-meter time ${(a.s / b.s).toFixed(3)} (${(b.s / a.s).toFixed(1)}× faster)`,
      )
    }
  }
  // an extrapolation, not a measurement: the same rate over 100,000 meters × 2,976 readings
  for (const [k, r] of Object.entries(results))
    console.log(
      `${k}: 100,000 meters × a month (297.6M rows) at this rate ≈ ${(297.6e6 / r.rowsPerS / 60).toFixed(0)} min`,
    )
  await Promise.all([apps.streamed.close(), old.close()])
  console.log(JSON.stringify({ meters: METERS, rows, results }, null, 2))
} finally {
  if (!PGLITE) await store.db.query(`DROP SCHEMA ${schema} CASCADE`).catch(() => {})
  await store.close()
}
