// SensorThings $filter over many Observations (`--only sta`): water meters' readings are loaded
// into the data tier (PostgreSQL in a private schema, and in-memory PGlite) so that the
// Observations view holds 1M of them (quick: 30k); each meter's interval volume, register and
// pressure are three Observations per reading. Each SensorThings request goes through the HTTP
// route (app.inject: parsing, the $filter translation, SQL, JSON) and is compared with a baseline
// measured in the same run against the same rows: the readings route for the same meter and time
// range where one exists, otherwise the hand-written SQL a programmer would run for the same
// answer. Median of 5 after a warm-up; ratio = SensorThings / baseline.
import { randomBytes } from "node:crypto"
import { buildApp } from "../bridge/src/api.js"
import { createMetrics } from "../bridge/src/metrics.js"
import { openStore, type StoreOptions } from "../bridge/src/store/engines.js"
import type { SqlStore } from "../bridge/src/store/sql-store.js"
import type { ReadingRow, Store } from "../bridge/src/store/store.js"
import { PG_URL, dropSchema } from "../testkit/services.js"

const STEP = 900_000
const T0 = Date.parse("2026-01-01T00:00:00Z")
const CHUNK = 20_000

export interface StaRow {
  engine: string
  query: string
  baselineMs: number
  staMs: number
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

async function time(fn: () => Promise<unknown>, runs = 5) {
  await fn()
  const ms: number[] = []
  for (let i = 0; i < runs; i++) {
    const t = performance.now()
    await fn()
    ms.push(performance.now() - t)
  }
  return median(ms)
}

/** meters × perMeter readings of water meters (volume, register, pressure: 3 Observations each). */
async function seed(store: Store, meters: number, perMeter: number) {
  const ids = [...Array(meters).keys()].map((i) => `sta-${String(i).padStart(4, "0")}`)
  for (const m of ids) await store.registerMeter(m, new Date(T0))
  let batch: ReadingRow[] = []
  const flush = async () => {
    const rows = batch
    batch = []
    await store.ingestBatch((tx) => tx.writeReadings(rows))
  }
  for (let i = 0; i < perMeter; i++)
    for (let k = 0; k < ids.length; k++) {
      batch.push({
        meterId: ids[k],
        ts: new Date(T0 + i * STEP),
        intervalS: 900,
        boot: 1,
        seq: Math.floor(i / 4) + 1,
        idx: i % 4,
        // a daily profile with a per-meter spread: values from 0 to ~9,000 mL
        volumeMl: Math.round(1000 + 800 * Math.sin((i / 96) * 2 * Math.PI) + ((k * 37 + i * 13) % 7000)),
        reverseMl: 0,
        waterTotalMl: 1_000_000 + i * 3000 + k,
        energyWh: null,
        energyTotalWh: null,
        powerW: null,
        voltageDv: null,
        pressureMinPa: null,
        pressureAvgPa: 300_000 + ((i * 7 + k) % 50_000),
        pressureMaxPa: null,
        timeSynced: true,
        backfill: false,
        tsEstimated: false,
        afterReboot: false,
      })
      if (batch.length >= CHUNK) await flush()
    }
  if (batch.length) await flush()
  return ids
}

export async function staBench(quick: boolean): Promise<StaRow[]> {
  const meters = quick ? 10 : 100
  const perMeter = quick ? 1000 : 3334
  const observations = meters * perMeter * 3
  console.log(
    `\n## SensorThings $filter over ${observations.toLocaleString("en-US")} Observations ` +
      `(${meters} water meters × ${perMeter} readings × 3 channels; median of 5, ms)`,
  )
  console.log("engine      query                                              baseline ms  SensorThings ms  ratio")
  const out: StaRow[] = []
  const engines: [string, string, StoreOptions][] = [
    ["PostgreSQL", PG_URL, { schema: `bench_${randomBytes(4).toString("hex")}` }],
    ["PGlite", "pglite:memory", {}],
  ]
  for (const [engine, url, opts] of engines) {
    const store = await openStore(url, opts)
    const app = buildApp({ store, metrics: createMetrics(), apiToken: "bench" })
    try {
      await store.migrate()
      await (store as SqlStore).ensurePartitions(new Date(T0), new Date(T0 + perMeter * STEP + 86_400_000))
      const t = performance.now()
      const ids = await seed(store, meters, perMeter)
      const db = (store as SqlStore).db
      // a tenth of the meters in one district, the rest in another
      await db.query(`UPDATE meters SET district = CASE WHEN meter_id < $1 THEN 'north' ELSE 'south' END`, [
        ids[Math.ceil(ids.length / 10)],
      ])
      await db.query(`ANALYZE`)
      console.log(`${engine.padEnd(10)}  (loaded in ${((performance.now() - t) / 1000).toFixed(1)} s)`)
      const m = ids[Math.floor(ids.length / 2)]
      const from = new Date(T0 + Math.floor(perMeter / 2) * STEP).toISOString()
      const to = new Date(T0 + (Math.floor(perMeter / 2) + 96) * STEP).toISOString()
      const inject = async (url: string) => {
        const res = await app.inject({ url })
        if (res.statusCode !== 200) throw new Error(`${url}: ${res.statusCode} ${res.body.slice(0, 300)}`)
        return res.json() as { value?: unknown[]; readings?: unknown[]; "@iot.count"?: number }
      }
      const sta = (path: string, q: string) =>
        `/sta/v1.1/${path}?${q.replace(/ /g, "%20").replace(/'/g, "%27")}`.replace(/\+/g, "%2B")
      const sql = async (text: string, params: unknown[]) => (await db.query(text, params)).rows
      type Case = [string, () => Promise<unknown>, () => Promise<unknown>]
      // a district's Observations through a relation; baseline: the hand-written semi-join
      const byDistrict = (path: string, district: string, top: number): Case => [
        `all Observations, ${path} district ${district === "x" ? "(none such)" : district}, $top=${top}`,
        () =>
          sql(
            `SELECT * FROM readings WHERE meter_id IN (SELECT meter_id FROM meters WHERE district = $1)
               ORDER BY meter_id, ts LIMIT $2`,
            [district, top + 1],
          ),
        () => inject(sta("Observations", `$top=${top}&$filter=${path}/properties/district eq '${district}'`)),
      ]
      const cases: Case[] = [
        [
          "one Datastream, one day (phenomenonTime ge/lt)",
          () => inject(`/meters/${m}/readings?from=${from}&to=${to}&limit=96`),
          () =>
            inject(
              sta(
                `Datastreams('${m}:water')/Observations`,
                `$top=96&$filter=phenomenonTime ge ${from} and phenomenonTime lt ${to}`,
              ),
            ),
        ],
        [
          "one Datastream, all time, result gt 8000 ($count)",
          async () => {
            await sql(`SELECT * FROM readings WHERE meter_id = $1 AND volume_ml > $2 ORDER BY ts LIMIT 101`, [m, 8000])
            await sql(`SELECT count(*) FROM readings WHERE meter_id = $1 AND volume_ml > $2`, [m, 8000])
          },
          () => inject(sta(`Datastreams('${m}:water')/Observations`, `$count=true&$filter=result gt 8000`)),
        ],
        [
          "all Observations, result gt 8000 and hour() eq 3, $top=100",
          () =>
            sql(
              `SELECT * FROM readings WHERE (volume_ml > $1 OR water_total_ml > $1 OR pressure_avg_pa > $1)
                 AND extract(hour FROM ts AT TIME ZONE 'UTC') = 3 ORDER BY meter_id, ts LIMIT 100`,
              [8000],
            ),
          () => inject(sta("Observations", `$top=100&$filter=result gt 8000 and hour(phenomenonTime) eq 3`)),
        ],
        [
          "all Observations, $count of result gt 8000 (full scan)",
          () =>
            sql(
              `SELECT (SELECT count(*) FROM readings WHERE volume_ml > $1) + (SELECT count(*) FROM readings WHERE water_total_ml > $1)
                 + (SELECT count(*) FROM readings WHERE pressure_avg_pa > $1) AS n`,
              [8000],
            ),
          () => inject(sta("Observations", `$count=true&$top=1&$filter=result gt 8000`)),
        ],
        [
          "all Observations, a time range, $orderby=result desc, $top=10",
          () =>
            sql(
              `SELECT * FROM readings WHERE ts >= $1 AND ts < $2 ORDER BY greatest(volume_ml, water_total_ml, pressure_avg_pa) DESC LIMIT 10`,
              [from, to],
            ),
          () =>
            inject(
              sta(
                "Observations",
                `$top=10&$orderby=result desc&$filter=phenomenonTime ge ${from} and phenomenonTime lt ${to}`,
              ),
            ),
        ],
        byDistrict("Datastream/Thing", "x", 1),
        byDistrict("FeatureOfInterest", "north", 100),
      ]
      // the answers agree before anything is timed
      const check = (await inject(
        sta(
          `Datastreams('${m}:water')/Observations`,
          `$top=96&$filter=phenomenonTime ge ${from} and phenomenonTime lt ${to}`,
        ),
      )) as { value: unknown[] }
      const base = await inject(`/meters/${m}/readings?from=${from}&to=${to}&limit=96`)
      if (check.value.length !== base.readings?.length || check.value.length === 0)
        throw new Error(
          `SensorThings gave ${check.value.length} Observations, the readings route ${base.readings?.length}`,
        )
      for (const [query, baseline, staQuery] of cases) {
        const baselineMs = await time(baseline)
        const staMs = await time(staQuery)
        out.push({ engine, query, baselineMs, staMs })
        console.log(
          `${engine.padEnd(10)}  ${query.padEnd(62)} ${baselineMs.toFixed(1).padStart(9)}  ${staMs.toFixed(1).padStart(15)}  ${(staMs / baselineMs).toFixed(2)}`,
        )
      }
    } finally {
      await app.close()
      await store.close()
      if (opts.schema) await dropSchema(opts.schema)
    }
  }
  return out
}
