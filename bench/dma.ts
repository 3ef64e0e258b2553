// The DMAs' water balance, measured (issue 25): `npm run bench:dma [-- meters districts engines]`
// (default 100000 100 postgres). A city of `meters` customer meters in `districts` districts, each
// a DMA with one inflow meter, and a month of rollup_day rows per meter, seeded with SQL straight
// into the rollup tables (loading 3 M meter-days through ingest would take hours on this machine;
// the balance reads only rollup_day, the DMAs' district days and the registry, so it sees the same
// rows; the district days are then filled from rollup_day as the migration step fills them).
// Prints the median time of the balance of every DMA and of one DMA, for a day and for the month,
// from the district days (dmaBalance, store/dma-days.ts) and per meter (dmaBalancePerMeter, the
// path before them) in the same run, their ratio, and checks that both give the same answers;
// and what a late frame costs: its ingest (the upkeep of the days it touches) and the periods
// whose balance it changes.
import { randomBytes } from "node:crypto"
import { openPglite, openPostgres } from "../bridge/src/store/engines.js"
import type { SqlStore } from "../bridge/src/store/sql-store.js"
import { NIGHT_FLOW_DEFAULTS } from "../bridge/src/store/dmas.js"
import {
  dmaBalance,
  dmaBalancePerMeter,
  type DmaBalanceQuery,
  type DmaBalanceRow,
} from "../bridge/src/store/dma-balance.js"
import { refillDmaDays } from "../bridge/src/store/dma-days.js"
import { readingRow } from "../testkit/rows.js"
import { insertReadings } from "../testkit/store-writes.js"
import { PG_URL } from "../testkit/services.js"

const DAY = 86_400_000
const MONTH0 = Date.parse("2031-05-01T00:00:00Z")
const DAYS = 31
/** The meter whose tenth day is left out of the seed and arrives as a late frame. */
const LATE_DAY = 9

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
async function time(runs: number, fn: () => Promise<unknown>) {
  const ms: number[] = []
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now()
    await fn()
    ms.push(performance.now() - t0)
  }
  return median(ms)
}

/**
 * rollup_day rows of the meters of `sql` (meter_id, daily use u in mL) for DAYS days: 96 readings
 * a day, complete, cumulative totals continuing (the first reading's amount u/96).
 */
const seedDays = (meters: string) => `
  INSERT INTO rollup_day (meter_id, bucket, readings, first_ts, last_ts, last_end,
    first_water_total_ml, first_volume_ml, last_water_total_ml, water_used,
    first_energy_total_wh, first_energy_wh, last_energy_total_wh, energy_used, reverse_ml, gap, district)
  SELECT m.meter_id, b, 96, b, b + interval '1 day' - interval '15 minutes', b + interval '1 day',
    d * m.u + m.u / 96, m.u / 96, (d + 1) * m.u, m.u - m.u / 96, NULL, NULL, NULL, NULL, 0, false, m.district
  FROM (${meters}) m
  CROSS JOIN LATERAL generate_series(0, ${DAYS - 1}) AS d
  CROSS JOIN LATERAL (SELECT to_timestamp(${MONTH0 / 1000} + d * 86400) AS b) x
  WHERE NOT (m.meter_id = 'c-0000000' AND d = ${LATE_DAY})`

async function measure(engine: "postgres" | "pglite", meters: number, districts: number) {
  const schema = `bench_${randomBytes(4).toString("hex")}`
  // the balance of every DMA of a large city takes longer than the API's read budget (READ_STATEMENT_MS)
  const reads = { statementMs: 600_000 }
  const store = (
    engine === "postgres" ? await openPostgres(PG_URL, { schema, reads }) : await openPglite(undefined, { reads })
  ) as SqlStore
  const db = store.db
  try {
    const t0 = performance.now()
    const per = Math.ceil(meters / districts)
    // customers: c-NNNNNNN in district dNNN; each district's inflow meter in-dNNN measures them all and a leak
    // the district days are filled once below (refillDmaDays), not by the trigger meter by meter
    await db.query(`ALTER TABLE meters DISABLE TRIGGER USER`)
    await db.query(
      `INSERT INTO meters (meter_id, first_seen, last_seen, district)
       SELECT 'c-' || lpad(i::text, 7, '0'), $1::timestamptz, $1::timestamptz, 'd' || lpad((i / ${per})::text, 3, '0')
       FROM generate_series(0, ${meters - 1}) AS i
       UNION ALL
       SELECT 'in-d' || lpad(k::text, 3, '0'), $1::timestamptz, $1::timestamptz, NULL FROM generate_series(0, ${districts - 1}) AS k`,
      [new Date(MONTH0)],
    )
    await db.query(
      seedDays(`SELECT meter_id, 9600 + (substr(meter_id, 3)::int % 50) * 96 AS u, district FROM meters
      WHERE meter_id LIKE 'c-%'`),
    )
    // an inflow meter's daily use: its customers' plus 1 m³ of leak
    await db.query(
      seedDays(`SELECT 'in-' || district AS meter_id, sum(9600 + (substr(meter_id, 3)::int % 50) * 96) + 1000000 AS u, '' AS district
        FROM meters WHERE meter_id LIKE 'c-%' GROUP BY district`),
    )
    await db.query(`ALTER TABLE meters ENABLE TRIGGER USER`)
    await refillDmaDays(db)
    await db.query(`ANALYZE`)
    for (let k = 0; k < districts; k++) {
      const id = `d${String(k).padStart(3, "0")}`
      await store.putDma(
        {
          dmaId: id,
          name: id,
          parentId: null,
          boundary: null,
          inflow: [`in-${id}`],
          outflow: [],
          customers: [],
          nightFlow: NIGHT_FLOW_DEFAULTS,
        },
        new Date(),
      )
    }
    const seedS = (performance.now() - t0) / 1000
    if (process.env.DMA_BENCH_KEEP) {
      console.log(`kept schema ${schema}`)
      return
    }
    const day = { from: new Date(MONTH0 + 14 * DAY), to: new Date(MONTH0 + 15 * DAY) }
    const month = { from: new Date(MONTH0), to: new Date(Date.UTC(2031, 5, 1)) }
    const check = (rows: DmaBalanceRow[], n: number) => {
      if (rows.length !== n) throw new Error(`expected ${n} rows, got ${rows.length}`)
    }
    const cases: [string, DmaBalanceQuery, number, number][] = [
      ["all DMAs, day", { bucket: "day", ...day }, districts, 3],
      ["all DMAs, month", { bucket: "month", ...month }, districts, 1],
      ["one DMA, day", { dmaIds: ["d000"], bucket: "day", ...day }, 1, 5],
      ["one DMA, month", { dmaIds: ["d000"], bucket: "month", ...month }, 1, 5],
    ]
    const figures: string[][] = []
    for (const [name, q, n, perMeterRuns] of cases) {
      // both on the writer's connection (the API's reads take turns with the writer's statements)
      const fast = await dmaBalance(db, q)
      const slow = await dmaBalancePerMeter(db, q)
      check(fast, n)
      if (JSON.stringify(fast) !== JSON.stringify(slow))
        throw new Error(`${name}: the district days differ from per meter`)
      const perMeter = await time(perMeterRuns, () => dmaBalancePerMeter(db, q))
      const districtDays = await time(9, () => dmaBalance(db, q))
      figures.push([name, perMeter.toFixed(0), districtDays.toFixed(1), (perMeter / districtDays).toFixed(0)])
    }
    const leak = (await store.dmaBalance({ dmaIds: ["d001"], bucket: "day", ...day }))[0].lossesMl

    // a late frame: c-0000000's tenth day, 96 readings through the ingest path
    const days = { dmaIds: ["d000"], bucket: "day" as const, ...month }
    const before = await store.dmaBalance(days)
    const u = 9600
    const start = MONTH0 + LATE_DAY * DAY
    const rows = Array.from({ length: 96 }, (_, i) =>
      readingRow("c-0000000", new Date(start + i * 900_000), {
        seq: 1,
        idx: i,
        volumeMl: u / 96,
        waterTotalMl: LATE_DAY * u + ((i + 1) * u) / 96,
      }),
    )
    const t1 = performance.now()
    await insertReadings(store, { meterId: "c-0000000", boot: 1, seq: 1 }, rows, new Date())
    const lateMs = performance.now() - t1
    const after = await store.dmaBalance(days)
    const afterPerMeter = await dmaBalancePerMeter(db, days)
    if (JSON.stringify(after) !== JSON.stringify(afterPerMeter)) {
      after.forEach(
        (r, i) => JSON.stringify(r) !== JSON.stringify(afterPerMeter[i]) && console.log(r, afterPerMeter[i]),
      )
      throw new Error(`after the late frame, the district days differ from per meter`)
    }
    const changed = after
      .filter((r, i) => JSON.stringify(r) !== JSON.stringify(before[i]))
      .map((r) => `${r.start.toISOString().slice(0, 10)} ${r.provisional ? "provisional" : "final"}`)
    const head = `| ${engine} | ${meters} | ${districts} | ${(meters + districts) * DAYS} | ${seedS.toFixed(0)}`
    for (const f of figures) console.log(`${head} | ${f.join(" | ")} |`)
    console.log(`${head} | late frame: ingest ${lateMs.toFixed(0)} ms; days it changed: ${changed.join(", ")} | | | |`)
    if (leak !== 1_000_000) throw new Error(`losses ${leak} mL, expected the 1 m³ leak`)
  } finally {
    if (engine === "postgres" && !process.env.DMA_BENCH_KEEP) await db.query(`DROP SCHEMA ${schema} CASCADE`)
    await store.close()
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [meters = 100_000, districts = 100] = process.argv.slice(2, 4).map(Number)
  const engines = (process.argv[4] ?? "postgres").split(",") as ("postgres" | "pglite")[]
  console.log(
    "| engine | meters | DMAs | meter-days | seed s | balance | per meter ms (median) | district days ms (median) | ratio |",
  )
  console.log("|---|---|---|---|---|---|---|---|---|")
  for (const e of engines) await measure(e, meters, districts)
}
