// The districts' months part of the Store contract (issue 24 item 3), run by describeStoreContract
// (tests/store-contract.ts) on both engines: the fleet by UTC month from rollup_district_month
// (one row per district and month, kept in the ingest transaction) answers exactly what every
// meter's daily rows summed answer (fleetConsumptionByMeter), under shuffled batches with late
// backfills, a total reset, a lost day, meters absent for a month, and a meter that moves; each
// month's meters are the fleet's distinct meters that month, not a sum of days; rollup_day is
// written once per (meter, day) per batch.
import { expect, test } from "vitest"
import type { SqlStore } from "../bridge/src/store/sql-store.js"
import type { FleetConsumptionRow, ReadingRow, Store } from "../bridge/src/store/store.js"
import { readingRow } from "../testkit/rows.js"
import { recordBirth } from "../testkit/store-writes.js"
import { uid } from "./helpers.js"

const Y = Date.parse("2037-01-25T00:00:00Z")
const DAY = 86_400_000
const STEP = 900_000
const month = (m: number) => new Date(Date.UTC(2037, m, 1))

interface F {
  meterId: string
  seq: number
  /** Interval start times (ms) and the water total at each interval's end. */
  ts: number[]
  totals: number[]
}

const rowsOf = (f: F): ReadingRow[] =>
  f.ts.map((t, idx) =>
    readingRow(f.meterId, new Date(t), {
      seq: f.seq,
      idx,
      volumeMl: idx ? f.totals[idx] - f.totals[idx - 1] : 5,
      reverseMl: idx % 3,
      waterTotalMl: f.totals[idx],
      energyWh: 1,
      energyTotalWh: f.totals[idx] * 2,
    }),
  )

async function writeBatch(store: Store, frames: F[], seen: Date) {
  await store.ingestBatch(async (tx) => {
    const meters = [...new Set(frames.map((f) => f.meterId))]
    await tx.touchMeters(meters.map((meterId) => ({ meterId, firstAt: seen, lastAt: seen })))
    const claims = await tx.claimFrames(
      frames.map((f) => ({ meterId: f.meterId, boot: 1, seq: f.seq, kind: "readings", at: seen })),
    )
    expect(claims.every((c) => c.kind === "stored")).toBe(true)
    await tx.writeReadings(frames.flatMap(rowsOf))
  })
}

export function districtMonthContract(getStore: () => Store) {
  test("district months: the fleet by UTC month from one row per district and month equals every meter's daily rows summed, under backfills and a move", async () => {
    const store = getStore()
    const sql = store as SqlStore
    const [dA, dB] = [uid("east"), uid("west")]
    const meters = [0, 1, 2, 3].map((i) => uid(`mon${i}`))
    const home = [dA, dA, dB, null]
    for (const [i, m] of meters.entries()) {
      const birth = { firmware: "f", board: "b", boot: 1, seq: 0, intervalS: 900, batch: 4, uptimeEpochMs: 0 }
      await recordBirth(store, m, birth, new Date(Y))
      if (home[i]) expect(await store.setLocation(m, { lat: 1, lon: 2, address: null, district: home[i] })).toBe(true)
    }
    // ~40 days across 3 month edges: frames of 1-4 intervals with gaps of up to 6 hours; meter 1's
    // total resets, meter 0 loses a day, meter 2 is silent in February, meter 3 starts in February
    let rnd = 7
    const next = () => (rnd = (rnd * 1103515245 + 12345) % 2 ** 31) / 2 ** 31
    const frames: F[] = []
    const end = Y + 40 * DAY
    for (const [i, m] of meters.entries()) {
      let total = 1000 * (i + 1)
      let seq = 0
      for (let t = i === 3 ? month(1).getTime() + 5 * DAY : Y; t < end;) {
        const k = 1 + Math.floor(next() * 4)
        const ts = [...Array(k).keys()].map((j) => t + j * STEP)
        if (i === 1 && t > Y + 12 * DAY && total > 500) total = 3
        const totals = ts.map(() => (total += Math.floor(next() * 40)))
        const silent =
          (i === 2 && t >= month(1).getTime() && t < month(2).getTime()) ||
          (i === 0 && t >= Y + 9 * DAY && t < Y + 10 * DAY)
        if (!silent) frames.push({ meterId: m, seq: ++seq, ts, totals })
        t += k * STEP + Math.floor(next() * 24) * STEP
      }
    }
    const seen = new Date(Y)
    // shuffled, in batches mixing meters: late backfills before, inside and after counted days and months
    const order = frames
      .map((f) => [next(), f] as const)
      .sort((a, b) => a[0] - b[0])
      .map(([, f]) => f)
    for (let i = 0; i < order.length; i += 40) await writeBatch(store, order.slice(i, i + 40), seen)

    const q = { bucket: "month" as const, from: month(0), to: month(5) }
    const same = async (query: typeof q) => {
      const fleet = (await store.fleetConsumption(query))!
      expect(fleet.length).toBeGreaterThan(0)
      expect(fleet).toEqual(await sql.fleetConsumptionByMeter(query))
      return fleet
    }
    const fleet = await same(q)
    // a month's meters are distinct meters: 3 in January and February, 4 in March
    expect(fleet.map((m) => [m.start.toISOString(), m.meters])).toEqual([
      [month(0).toISOString(), 3],
      [month(1).toISOString(), 3],
      [month(2).toISOString(), 4],
    ])
    // every meter's months summed
    const per = await Promise.all(meters.map((m) => store.consumption(m, q)))
    const summed = (d: FleetConsumptionRow) => {
      const rows = per.flat().filter((c) => c.start.getTime() === d.start.getTime())
      return {
        water: rows.reduce((s, c) => s + c.waterMl!, 0),
        energy: rows.reduce((s, c) => s + c.energyWh!, 0),
        readings: rows.reduce((s, c) => s + c.readings, 0),
        meters: rows.length,
      }
    }
    for (const d of fleet)
      expect(summed(d)).toEqual({ water: d.waterMl, energy: d.energyWh, readings: d.readings, meters: d.meters })
    // the month table's counters are its district days summed, per district
    const monthRows = async () =>
      (
        await sql.db.query<{ district: string; bucket: Date; meters: number; water: string; readings: string }>(
          `SELECT district, bucket, meters, water, readings FROM rollup_district_month
           WHERE district = ANY($1) ORDER BY district, bucket`,
          [[dA, dB]],
        )
      ).rows.map((r) => [
        r.district,
        new Date(r.bucket).toISOString(),
        Number(r.meters),
        Number(r.water),
        Number(r.readings),
      ])
    const fromDays = async () =>
      (
        await sql.db.query<{ district: string; bucket: Date; water: string; readings: string }>(
          `SELECT district, date_trunc('month', bucket, 'UTC') AS bucket, sum(water) AS water, sum(readings) AS readings
           FROM rollup_district_day WHERE district = ANY($1) GROUP BY 1, 2 ORDER BY 1, 2`,
          [[dA, dB]],
        )
      ).rows.map((r) => [r.district, new Date(r.bucket).toISOString(), Number(r.water), Number(r.readings)])
    const counters = (rows: (string | number)[][]) => rows.map(([d, b, , w, r]) => [d, b, w, r])
    expect(counters(await monthRows())).toEqual(await fromDays())
    // whole months only: a range starting mid-month reads the daily rows, with the same answers
    await same({ ...q, from: new Date(Y) })
    await same({ ...q, to: new Date(month(2).getTime() + 3 * DAY) })

    // meter 0 moves to B: its months stay in A; a late frame into its lost day (a new day row,
    // counted in B, its month already counted in A) and a first frame in April (B's meter-month)
    expect(await store.setLocation(meters[0], { lat: 1, lon: 2, address: null, district: dB })).toBe(true)
    const mine = frames.filter((f) => f.meterId === meters[0])
    const seq = mine.length + 1
    const last = mine.at(-1)!.totals.at(-1)!
    const lostDay = Y + 9 * DAY + 3 * STEP
    const before = (await monthRows()).filter(([d]) => d === dA)
    await writeBatch(store, [{ meterId: meters[0], seq, ts: [lostDay, lostDay + STEP], totals: [400, 410] }], seen)
    await writeBatch(
      store,
      [
        {
          meterId: meters[0],
          seq: seq + 1,
          ts: [month(3).getTime(), month(3).getTime() + STEP],
          totals: [last + 10, last + 20],
        },
      ],
      seen,
    )
    const after = await same(q)
    expect(after.map((m) => m.meters)).toEqual([3, 3, 4, 1])
    expect(after[3].waterMl).toBe(20)
    const a = (await monthRows()).filter(([d]) => d === dA)
    const b = (await monthRows()).filter(([d]) => d === dB)
    // A keeps its meter-months; the backfilled day's consumption is B's, not A's
    expect(a.map(([, m, n]) => [m, n])).toEqual(before.map(([, m, n]) => [m, n]))
    expect(b.find(([, m]) => m === month(3).toISOString())?.[2]).toBe(1)
    expect(counters(await monthRows())).toEqual(await fromDays())
    // the whole tier, every month (other tests' data too): the same from both paths
    expect(await store.fleetConsumption({ bucket: "month" })).toEqual(
      await sql.fleetConsumptionByMeter({ bucket: "month" }),
    )
  })

  test("rollup_day: each batch writes one version of each of its (meter, day) rows (no second UPDATE)", async () => {
    const store = getStore()
    const [m, n] = [uid("once"), uid("once")]
    const t0 = Date.parse("2038-03-01T00:00:00Z")
    const at = (i: number) => t0 + i * 4 * STEP
    // rollup_day's inserts and updates by the batch's writeReadings (pg_stat_xact_user_tables)
    const batch = (frames: F[]) =>
      store.ingestBatch(async (tx) => {
        await tx.touchMeters(
          [...new Set(frames.map((f) => f.meterId))].map((meterId) => ({
            meterId,
            firstAt: new Date(t0),
            lastAt: new Date(t0),
          })),
        )
        await tx.claimFrames(
          frames.map((f) => ({ meterId: f.meterId, boot: 1, seq: f.seq, kind: "readings", at: new Date(t0) })),
        )
        const db = (tx as unknown as { db: SqlStore["db"] }).db
        // the backend's counts not yet reported, this transaction's included: read before and after
        const counts = async () => {
          const { rows } = await db.query<{ ins: string; upd: string }>(
            `SELECT n_tup_ins AS ins, n_tup_upd AS upd FROM pg_stat_xact_user_tables
             WHERE relname = 'rollup_day' AND schemaname = current_schema()`,
          )
          return [Number(rows[0].ins), Number(rows[0].upd)]
        }
        const before = await counts()
        await tx.writeReadings(frames.flatMap(rowsOf))
        const after = await counts()
        return [after[0] - before[0], after[1] - before[1]]
      })
    expect(await batch([{ meterId: m, seq: 1, ts: [at(0)], totals: [10] }])).toEqual([1, 0])
    expect(await batch([{ meterId: m, seq: 2, ts: [at(1)], totals: [20] }])).toEqual([0, 1])
    // two meters, one of them over two days (a new day row and an update)
    expect(
      await batch([
        { meterId: m, seq: 3, ts: [at(2), t0 + DAY], totals: [30, 40] },
        { meterId: n, seq: 1, ts: [at(2)], totals: [5] },
      ]),
    ).toEqual([2, 1])
  })
}
