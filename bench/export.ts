// The open-data export of a month, opt-in, not CI:
// `npm run bench:export -- [meters] [--skip-old] [--per-meter] [--interleaved] [--pglite] [--seed-only]
// [--compacted]`
// (default 2,000 meters). Seeds meters × one month (January 2026, 31 days) of 15-minute readings
// straight into PostgreSQL (a private schema, dropped afterwards; INSERT … SELECT generate_series,
// no ingest path; each meter's month together on disk, or with --interleaved in time order, every
// meter's interval before the next interval's, as ingest writes them; with --pglite, PGlite in
// memory; --seed-only keeps the schema for probing the query by hand), then fetches
// /export/readings/2026-01.csv and .ndjson over real HTTP from the bridge's app (a listener in this
// process; curl in its own process checksums the body) by the store's path (PostgreSQL: one COPY per
// file, store/export-rows.ts) and, same data, same run, by the path before it (PostgreSQL: a
// cursor of engine-written lines, FETCHed 5,000 at a time; PGlite: none) and, with --per-meter or
// on PGlite, the first path (one query per meter and page, perMeterLines): wall time, rows/s,
// bytes, lines, checksum (equal or the run fails), the bridge process's CPU time and its RSS peak
// while each file streams (sampled every 50 ms), the load average of the machine.
import { execFile } from "node:child_process"
import { readFileSync } from "node:fs"
import { randomBytes } from "node:crypto"
import { loadavg } from "node:os"
import pg from "pg"
import { buildApp } from "../bridge/src/api.js"
import { createMetrics } from "../bridge/src/metrics.js"
import { openPglite, openPostgres } from "../bridge/src/store/engines.js"
import { copySql } from "../bridge/src/store/export-rows.js"
import type { SqlStore } from "../bridge/src/store/sql-store.js"
import type { Store } from "../bridge/src/store/store.js"
import { PG_URL } from "../testkit/services.js"
import { cursorExportPath, formerExportPath } from "../testkit/export-paths.js"

const args = process.argv.slice(2)
const METERS = Number(args.find((a) => /^\d+$/.test(a)) ?? 2000)
const SKIP_OLD = args.includes("--skip-old")
/** Also the first path, one query per meter and page (always on PGlite, which has no cursor path). */
const PER_METER = args.includes("--per-meter")
/** Rows written in time order (as ingest does) rather than meter by meter. */
const INTERLEAVED = args.includes("--interleaved")
/** PGlite in memory instead of PostgreSQL: its keyset batches (store/export-rows.ts). */
const PGLITE = args.includes("--pglite")
/** Then compact January into blocks (issue 24) and export it again from them: same bytes, its time. */
const COMPACTED = args.includes("--compacted")
/** Only seed, and keep the schema (its name is printed), for probing the query by hand. */
const SEED_ONLY = args.includes("--seed-only")
const M0 = "2026-01-01T00:00:00Z"
const READINGS = 31 * 96
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
  await store.ensurePartitions(new Date(M0), new Date(Date.parse(M0) + READINGS * 900_000))
  if (INTERLEAVED)
    for (let day = 0; day < 31; day++)
      await db.query(
        `INSERT INTO readings (${COLUMNS}) SELECT ${VALUES}
         FROM generate_series($2::int, $3::int) s, generate_series(1, $4::int) m ORDER BY s, m`,
        [M0, day * 96, day * 96 + 95, METERS],
      )
  else
    for (let lo = 1; lo <= METERS; lo += 500)
      await db.query(
        `INSERT INTO readings (${COLUMNS}) SELECT ${VALUES}
         FROM generate_series($2::int, $3::int) m, generate_series(0, $4::int - 1) s`,
        [M0, lo, Math.min(METERS, lo + 499), READINGS],
      )
  await db.query(`VACUUM ANALYZE`)
}

/**
 * GET url over HTTP by curl in a process of its own (as a harvester elsewhere would: the client
 * takes none of this process's CPU), the body checksummed as it arrives; wall time, bytes, lines,
 * checksum, this process's CPU time and RSS peak meanwhile. The checksum is cksum's CRC (≈ 2.7 GB/s
 * here), not sha256sum (≈ 0.12 GB/s under load, which bounded the 2 GB NDJSON files before): it
 * compares two paths' bytes, nothing adversarial; the tests compare the bytes themselves.
 */
async function fetchFile(url: string) {
  const rss0 = process.memoryUsage().rss
  const cpu0 = process.cpuUsage()
  const engine0 = await backendCpu()
  let peak = rss0
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50)
  const t0 = performance.now()
  const sh = `set -o pipefail; curl -sS --fail '${url}' | tee >(wc -l >&2) | cksum`
  const out = await new Promise<{ cksum: string; lines: string; bytes: number }>((resolve, reject) => {
    execFile("bash", ["-c", sh.replace("wc -l", "wc -lc")], { maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${url}: ${stderr || err.message}`))
      const [lines, bytes] = stderr.trim().split(/\s+/)
      resolve({ cksum: stdout.trim().split(" ")[0], lines, bytes: Number(bytes) })
    })
  })
  const s = (performance.now() - t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  let engineCpuS = 0
  for (const [pid, t] of await backendCpu()) engineCpuS += t - (engine0.get(pid) ?? 0)
  clearInterval(sampler)
  peak = Math.max(peak, process.memoryUsage().rss)
  return {
    s,
    ...out,
    lines: Number(out.lines),
    bridgeCpuS: (cpu.user + cpu.system) / 1e6,
    engineCpuS,
    rssBeforeMiB: rss0 / MiB,
    rssPeakMiB: peak / MiB,
    load: loadavg()[0],
  }
}

const schema = `bench_${randomBytes(4).toString("hex")}`
// every connection of the store carries this name (pg reads PGAPPNAME), so that the engine's CPU
// time spent on a file is the sum over its backends (/proc/<pid>/stat; PostgreSQL on this machine)
process.env.PGAPPNAME = schema
const monitor = PGLITE ? undefined : new pg.Client({ connectionString: PG_URL, application_name: "bench-monitor" })
await monitor?.connect()
/** CPU seconds of the store's PostgreSQL backends so far, by pid. */
async function backendCpu(): Promise<Map<number, number>> {
  const out = new Map<number, number>()
  if (!monitor) return out
  const { rows } = await monitor.query<{ pid: number }>(
    `SELECT pid FROM pg_stat_activity WHERE application_name = $1`,
    [schema],
  )
  for (const { pid } of rows) {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ")
      out.set(pid, (Number(f[11]) + Number(f[12])) / 100)
    } catch {
      // gone meanwhile
    }
  }
  return out
}
const store = (PGLITE ? await openPglite(undefined) : await openPostgres(PG_URL, { schema })) as SqlStore
try {
  const t0 = performance.now()
  await seed(store)
  const rows = METERS * READINGS
  console.log(
    `seeded ${METERS} meters × ${READINGS} readings = ${rows} rows in ${((performance.now() - t0) / 1000).toFixed(0)} s`,
  )
  if (SEED_ONLY) {
    console.log(`kept schema ${schema}`)
    await store.close()
    process.exit(0)
  }
  const size = await store.db.query<{ b: string }>(`SELECT pg_total_relation_size('readings_p202601') AS b`)
  console.log(`January's partition: ${(Number(size.rows[0].b) / MiB).toFixed(0)} MiB with its indexes`)
  if (!PGLITE) {
    const plan = await store.db.query<{ "QUERY PLAN": string }>(
      `EXPLAIN ${copySql(new Date(M0), new Date("2026-02-01T00:00:00Z"), "csv").replace(/^COPY \((.*)\) TO STDOUT.*$/s, "$1")}`,
    )
    console.log(plan.rows.map((r) => r["QUERY PLAN"]).join("\n"))
  }
  // the store's path; the one before it (PostgreSQL: the cursor); the first (one query per meter and page)
  const paths: [string, Store][] = [[PGLITE ? "keyset" : "copy", store]]
  if (!SKIP_OLD && !PGLITE) paths.push(["cursor", cursorExportPath(store, store.db.reads!)])
  if (!SKIP_OLD && (PER_METER || PGLITE)) paths.push(["per-meter", formerExportPath(store)])
  const apps = await Promise.all(
    paths.map(async ([name, s]) => {
      const app = buildApp({ store: s, metrics: createMetrics() })
      return { name, app, base: await app.listen({ port: 0, host: "127.0.0.1" }) }
    }),
  )
  const results: Record<string, Awaited<ReturnType<typeof fetchFile>> & { rowsPerS: number }> = {}
  for (const format of ["csv", "ndjson"]) {
    for (const { name, base } of apps) {
      global.gc?.()
      const r = await fetchFile(`${base}/export/readings/2026-01.${format}`)
      const out = { ...r, rowsPerS: Math.round(rows / r.s) }
      results[`${name} ${format}`] = out
      console.log(
        `${name.padEnd(9)} ${format.padEnd(6)} ${out.s.toFixed(1)} s, ${out.rowsPerS} rows/s, ` +
          `${(out.bytes / MiB).toFixed(0)} MiB, ${out.lines} lines, CPU bridge ${out.bridgeCpuS.toFixed(1)} s, ` +
          `engine ${out.engineCpuS.toFixed(1)} s (${((out.engineCpuS / rows) * 1e6).toFixed(2)} µs/row), ` +
          `RSS ${out.rssBeforeMiB.toFixed(0)} → peak ${out.rssPeakMiB.toFixed(0)} MiB, cksum ${out.cksum}, load ${out.load.toFixed(1)}`,
      )
      if (out.lines !== rows + (format === "csv" ? 1 : 0)) throw new Error(`${name} ${format}: ${out.lines} lines`)
    }
    const first = results[`${apps[0].name} ${format}`]
    for (const { name } of apps.slice(1)) {
      const b = results[`${name} ${format}`]
      if (first.cksum !== b.cksum || first.bytes !== b.bytes) throw new Error(`${format}: ${name}'s bytes differ`)
      console.log(
        `${format}: identical bytes; ${apps[0].name} / ${name} time ${(first.s / b.s).toFixed(3)} (${(b.s / first.s).toFixed(1)}× faster)`,
      )
    }
  }
  if (COMPACTED) {
    // January into one block per meter, then the same files by the store's path from the blocks
    const c0 = performance.now()
    const done = await store.compactReadings(new Date("2026-02-01T00:00:00Z"))
    await store.db.query(`VACUUM ANALYZE`)
    console.log(
      `compacted ${done.readings} readings into ${done.blocks} blocks in ${((performance.now() - c0) / 1000).toFixed(1)} s`,
    )
    for (const format of ["csv", "ndjson"]) {
      global.gc?.()
      const r = await fetchFile(`${apps[0].base}/export/readings/2026-01.${format}`)
      const out = { ...r, rowsPerS: Math.round(rows / r.s) }
      const rowsForm = results[`${apps[0].name} ${format}`]
      results[`${apps[0].name} ${format} from blocks`] = out
      console.log(
        `${apps[0].name} ${format} from blocks: ${out.s.toFixed(1)} s, ${out.rowsPerS} rows/s, CPU bridge ` +
          `${out.bridgeCpuS.toFixed(1)} s, engine ${out.engineCpuS.toFixed(1)} s ` +
          `(${((out.engineCpuS / rows) * 1e6).toFixed(2)} µs/row), RSS ${out.rssBeforeMiB.toFixed(0)} → peak ` +
          `${out.rssPeakMiB.toFixed(0)} MiB, load ${out.load.toFixed(1)}; time against rows ${(out.s / rowsForm.s).toFixed(2)}`,
      )
      if (out.cksum !== rowsForm.cksum || out.bytes !== rowsForm.bytes)
        throw new Error(`${format}: the bytes from blocks differ from the bytes from rows`)
    }
  }
  // an extrapolation, not a measurement: the same rate over 100,000 meters × 2,976 readings
  for (const [k, r] of Object.entries(results))
    console.log(
      `${k}: 100,000 meters × a month (297.6M rows) at this rate ≈ ${(297.6e6 / r.rowsPerS / 60).toFixed(1)} min`,
    )
  await Promise.all(apps.map((a) => a.app.close()))
  console.log(JSON.stringify({ meters: METERS, rows, interleaved: INTERLEAVED, results }, null, 2))
} finally {
  if (!PGLITE) await store.db.query(`DROP SCHEMA ${schema} CASCADE`).catch(() => {})
  await store.close()
  await monitor?.end()
}
