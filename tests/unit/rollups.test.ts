// The rollup maths without a database: a batch's readings aggregated per (meter, hour) as the
// rollup rows keep them (bridge/src/store/rollups.ts), and which rollup a consumption query may read
// (bridge/src/store/consumption.ts). The store suites check the same rows against readings in SQL.
import { describe, expect, test } from "vitest"
import { rollupFor } from "../../bridge/src/store/consumption.js"
import { aggregate, ROLLUP_COLUMNS, ROLLUPS } from "../../bridge/src/store/rollups.js"
import type { ReadingRow } from "../../bridge/src/store/store.js"
import { readingRow } from "../../testkit/rows.js"

const [HOUR, DAY] = ROLLUPS
const T0 = Date.UTC(2026, 0, 5, 10, 0, 0)
const MIN = 60_000

/** A 15-minute reading of `meterId` at `minute` past T0 (its seq numbers the quarter). */
const reading = (meterId: string, minute: number, over: Partial<ReadingRow> = {}): ReadingRow =>
  readingRow(meterId, new Date(T0 + minute * MIN), { seq: 1 + Math.floor(minute / 15), ...over })

/** aggregate's column arrays as one object per rollup row. */
function rowsOf(cols: unknown[][]): Record<string, unknown>[] {
  return cols[0].map((_, i) => Object.fromEntries(ROLLUP_COLUMNS.map((name, c) => [name, cols[c][i]])))
}

const water = (minute: number, totalMl: number, volumeMl: number, over: Partial<ReadingRow> = {}) =>
  reading("m1", minute, { waterTotalMl: totalMl, volumeMl, ...over })

describe("aggregate: a batch's readings as rollup rows", () => {
  test("one row per meter and bucket; `used` sums every reading's charge but the first's, which the edges keep", () => {
    const rows = rowsOf(
      aggregate(HOUR, [water(0, 1000, 100), water(15, 1250, 250), water(30, 1300, 50), water(45, 1400, 100)]),
    )
    expect(rows).toHaveLength(1)
    expect(rows[0]).toMatchObject({
      meter_id: "m1",
      bucket: T0,
      readings: 4,
      first_ts: T0,
      last_ts: T0 + 45 * MIN,
      last_end: T0 + 60 * MIN,
      first_water_total_ml: 1000,
      first_volume_ml: 100,
      last_water_total_ml: 1400,
      water_used: 400, // 250 + 50 + 100: the totals' differences
      energy_used: null, // no energy channel: NULL, as sum() over NULLs
      gap: false,
    })
  })

  test("a total that goes back (a counter restart) charges that interval's own amount instead", () => {
    const [row] = rowsOf(aggregate(HOUR, [water(0, 5000, 10), water(15, 40, 40), water(30, 90, 50)]))
    expect(row.water_used).toBe(40 + 50)
  })

  test("a missing interval inside the bucket is a gap; reverse flow is summed over every reading", () => {
    const [row] = rowsOf(
      aggregate(HOUR, [water(0, 0, 0, { reverseMl: 5 }), water(30, 20, 20, { reverseMl: 7 }), water(45, 30, 10)]),
    )
    expect(row.gap).toBe(true)
    expect(row.reverse_ml).toBe(12)
  })

  test("readings out of order (a backfill) are sorted before the charges; meters and buckets are kept apart", () => {
    const batch = [
      water(45, 1400, 100),
      reading("m2", 5, { energyTotalWh: 10, energyWh: 1 }),
      water(0, 1000, 100),
      water(75, 1500, 100), // the next hour
      water(15, 1250, 250),
      reading("m2", 20, { energyTotalWh: 13, energyWh: 3 }),
      water(30, 1300, 50),
    ]
    const rows = rowsOf(aggregate(HOUR, batch))
    const key = (r: Record<string, unknown>) => `${String(r.meter_id)}@${Number(r.bucket) - T0}`
    expect(rows.map(key).sort()).toEqual(["m1@0", "m1@3600000", "m2@0"])
    const m1 = rows.find((r) => key(r) === "m1@0")!
    expect(m1).toMatchObject({ readings: 4, first_water_total_ml: 1000, last_water_total_ml: 1400, water_used: 400 })
    const next = rows.find((r) => key(r) === "m1@3600000")!
    expect(next).toMatchObject({ readings: 1, first_water_total_ml: 1500, water_used: null })
    const m2 = rows.find((r) => r.meter_id === "m2")!
    expect(m2).toMatchObject({ readings: 2, energy_used: 3, first_energy_total_wh: 10, water_used: null })
  })

  test("the daily rollup puts a day's readings in one row at UTC midnight", () => {
    const rows = rowsOf(aggregate(DAY, [water(0, 0, 0), water(600, 70, 70)]))
    expect(rows).toHaveLength(1)
    expect(rows[0].bucket).toBe(Date.UTC(2026, 0, 5))
    expect(rows[0].water_used).toBe(70)
  })
})

describe("rollupFor: which rollup a consumption query may read", () => {
  const day = (d: number, h = 0) => new Date(Date.UTC(2026, 0, d, h))
  test("days and months on whole UTC days read the daily rollup", () => {
    expect(rollupFor({ bucket: "day", from: day(1), to: day(8) })).toBe(DAY)
    expect(rollupFor({ bucket: "month", from: day(1), to: day(31) })).toBe(DAY)
  })
  test("hours, another time zone, or ends on whole hours only read the hourly rollup", () => {
    expect(rollupFor({ bucket: "hour", from: day(1), to: day(2) })).toBe(HOUR)
    expect(rollupFor({ bucket: "day", from: day(1), to: day(8), tz: "Europe/Paris" })).toBe(HOUR)
    expect(rollupFor({ bucket: "day", from: day(1, 5), to: day(8) })).toBe(HOUR)
  })
  test("15 minutes, or an end inside an hour, read readings", () => {
    expect(rollupFor({ bucket: "15min", from: day(1), to: day(2) })).toBeUndefined()
    expect(rollupFor({ bucket: "hour", from: new Date(day(1).getTime() + 15 * MIN) })).toBeUndefined()
  })
})
