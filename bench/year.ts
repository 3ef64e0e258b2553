// A year of a city in the data tier, opt-in, not CI: `npm run bench:year -- [meters]`
// (default 1000). Loads meters × one year of 15-minute readings through the ingest path (one
// transaction per batch of frames, rollups included) into PostgreSQL (a private schema, dropped
// afterwards), then reports load time, disk bytes per meter-year, and /consumption for one meter
// by month and for the whole fleet by day (the store calls the routes make; median of 5).
import { randomBytes } from "node:crypto"
import pg from "pg"
import { openPostgres } from "../bridge/src/store/engines.js"
import type { SqlStore } from "../bridge/src/store/sql-store.js"
import type { LedgerEntry, ReadingRow } from "../bridge/src/store/store.js"
import { readingRow } from "../testkit/rows.js"

const URL = process.env.DATABASE_URL ?? "postgres://root@127.0.0.1:5432/test"
const METERS = Number(process.argv[2] ?? 1000)
const Y0 = Date.parse("2025-01-01T00:00:00Z")
const STEP = 900_000
const PER_YEAR = 365 * 96
const FRAME = 4 // intervals per frame
const BATCH_FRAMES = 1000

const schema = `bench_${randomBytes(4).toString("hex")}`
const store = (await openPostgres(URL, { schema })) as SqlStore
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
try {
  const ids = [...Array(METERS).keys()].map((i) => `y-${String(i).padStart(5, "0")}`)
  // registered first, in 10 districts, so each day is counted in its meter's district
  await store.ingestBatch(async (tx) => {
    await tx.touchMeters(ids.map((m) => ({ meterId: m, firstAt: new Date(Y0), lastAt: new Date(Y0) })))
  })
  for (const [i, m] of ids.entries())
    await store.setLocation(m, { lat: 52 + i / 1e4, lon: 13, address: null, district: `d${i % 10}` })
  // the test server runs without autovacuum; a city's would not: the bench vacuums in its stead
  const autovacuum = (await store.db.query<{ autovacuum: string }>(`SHOW autovacuum`)).rows[0].autovacuum === "on"
  if (!autovacuum) console.error("autovacuum is off on this server: the bench vacuums rollup_day every 200 batches")
  let batches = 0
  const t0 = performance.now()
  let rows = 0
  // time-major, as a city's frames arrive: every meter's frame k, then frame k + 1
  for (let s = 0; s < PER_YEAR; s += FRAME * (BATCH_FRAMES / METERS > 1 ? Math.floor(BATCH_FRAMES / METERS) : 1)) {
    const span = Math.max(1, Math.floor(BATCH_FRAMES / METERS)) * FRAME
    for (let lo = 0; lo < METERS; lo += BATCH_FRAMES) {
      const meters = ids.slice(lo, lo + BATCH_FRAMES)
      const batch: ReadingRow[] = []
      const frames: LedgerEntry[] = []
      for (const m of meters)
        for (let f = s; f < Math.min(PER_YEAR, s + span); f += FRAME) {
          frames.push({
            meterId: m,
            boot: 1,
            seq: f / FRAME + 1,
            kind: "readings" as const,
            at: new Date(Y0 + f * STEP),
          })
          for (let i = f; i < f + FRAME; i++)
            batch.push(
              readingRow(m, new Date(Y0 + i * STEP), {
                seq: f / FRAME + 1,
                idx: i - f,
                volumeMl: 10,
                reverseMl: 0,
                waterTotalMl: 10 * (i + 1),
                energyWh: 1,
                energyTotalWh: i + 1,
                powerW: 100,
                voltageDv: 2300,
                pressureMinPa: 1,
                pressureAvgPa: 2,
                pressureMaxPa: 3,
              }),
            )
        }
      await store.ingestBatch(async (tx) => {
        await tx.claimFrames(frames)
        await tx.writeReadings(batch)
      })
      rows += batch.length
      // as autovacuum would: every batch updates its meters' day rows (once each since issue 24)
      if (!autovacuum && ++batches % 200 === 0) await store.db.query(`VACUUM rollup_day`)
    }
  }
  const loadS = (performance.now() - t0) / 1000
  await store.db.query(`VACUUM ANALYZE`)
  const size = async (like: string) =>
    Number(
      (
        await store.db.query<{ b: string }>(
          `SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0) AS b FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname LIKE $1`,
          [like],
        )
      ).rows[0].b,
    )
  const [readingsB, hourB, dayB, districtB, districtMonthB, framesB] = await Promise.all(
    ["readings_p%", "rollup_hour", "rollup_day", "rollup_district_day", "rollup_district_month", "frames"].map(size),
  )
  const time = async (fn: () => Promise<unknown>) => {
    const ms = []
    for (let i = 0; i < 5; i++) {
      const t = performance.now()
      await fn()
      ms.push(performance.now() - t)
    }
    return median(ms)
  }
  const year = { from: new Date(Y0), to: new Date(Date.parse("2026-01-01T00:00:00Z")) }
  const months = await store.consumption(ids[0], { bucket: "month", ...year })
  const monthMs = await time(() => store.consumption(ids[0], { bucket: "month", ...year }))
  const fleet = (await store.fleetConsumption({ bucket: "day", ...year }))!
  const fleetYearMs = await time(() => store.fleetConsumption({ bucket: "day", ...year }))
  const june = { from: new Date("2025-06-01T00:00:00Z"), to: new Date("2025-07-01T00:00:00Z") }
  const fleetMonthMs = await time(() => store.fleetConsumption({ bucket: "day", ...june }))
  // the same from every meter's daily rows (what the fleet by day read before the district days)
  const byMeter = (await store.fleetConsumptionByMeter({ bucket: "day", ...year }))!
  const fleetYearByMeterMs = await time(() => store.fleetConsumptionByMeter({ bucket: "day", ...year }))
  const districtYearMs = await time(() => store.fleetConsumption({ bucket: "day", ...year, district: "d3" }))
  const fleetByMonthMs = await time(() => store.fleetConsumption({ bucket: "month", ...year }))
  // the same from every meter's daily rows (what the fleet by month read before the district months)
  const byMonth = (await store.fleetConsumption({ bucket: "month", ...year }))!
  const byMonthByMeter = (await store.fleetConsumptionByMeter({ bucket: "month", ...year }))!
  const fleetByMonthByMeterMs = await time(() => store.fleetConsumptionByMeter({ bucket: "month", ...year }))
  const berlinMs = await time(() => store.consumption(ids[0], { bucket: "month", ...year, tz: "Europe/Berlin" }))
  const rawMs = await time(() => store.consumptionFromReadings(ids[0], { bucket: "month", ...year }))
  const out = {
    meters: METERS,
    rows,
    loadS: +loadS.toFixed(1),
    rowsPerS: Math.round(rows / loadS),
    bytesPerMeterYear: {
      readings: Math.round(readingsB / METERS),
      rollupHour: Math.round(hourB / METERS),
      rollupDay: Math.round(dayB / METERS),
      frames: Math.round(framesB / METERS),
    },
    oneMeterByMonthMs: +monthMs.toFixed(1),
    oneMeterByMonthBerlinMs: +berlinMs.toFixed(1),
    oneMeterByMonthFromReadingsMs: +rawMs.toFixed(1),
    fleetByDayYearMs: +fleetYearMs.toFixed(1),
    fleetByDayMonthMs: +fleetMonthMs.toFixed(1),
    fleetByDayYearFromMeterRowsMs: +fleetYearByMeterMs.toFixed(1),
    oneDistrictByDayYearMs: +districtYearMs.toFixed(1),
    fleetByMonthYearMs: +fleetByMonthMs.toFixed(1),
    fleetByMonthYearFromMeterRowsMs: +fleetByMonthByMeterMs.toFixed(1),
    districtDayBytes: districtB,
    districtMonthBytes: districtMonthB,
    check: {
      months: months.length,
      monthWaterMl: months[0]?.waterMl,
      fleetDays: fleet.length,
      fleetDayWaterMl: fleet[1]?.waterMl,
      districtDaysEqualMeterRows: JSON.stringify(fleet) === JSON.stringify(byMeter),
      fleetMonths: byMonth.length,
      fleetMonthMeters: byMonth[0]?.meters,
      districtMonthsEqualMeterRows: JSON.stringify(byMonth) === JSON.stringify(byMonthByMeter),
    },
  }
  console.log(JSON.stringify(out, null, 2))
} finally {
  await store.close()
  const c = new pg.Client({ connectionString: URL })
  await c.connect()
  await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
  await c.end()
}
