// The DMAs' balance by day and UTC month from the district days (store/dma-days.ts) gives the
// same answers as the per-meter computation (dmaBalancePerMeter) on both engines: after a late
// frame that completes its day and the next one (provisional → final, only those days and their
// month changed), after explicit members change, a DMA is created on a district with history or
// deleted, and after a meter moves district; the tables kept by ingest equal a refill from
// rollup_day (the migration step's fill).
import { randomBytes } from "node:crypto"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { dmaBalancePerMeter, type DmaBalanceQuery, type DmaBalanceRow } from "../../bridge/src/store/dma-balance.js"
import {
  DISTRICT_DAYS,
  DISTRICT_METERS,
  DISTRICT_MONTHS,
  METER_MONTHS,
  refillDmaDays,
} from "../../bridge/src/store/dma-days.js"
import { NIGHT_FLOW_DEFAULTS, type DmaInput } from "../../bridge/src/store/dmas.js"
import { openPglite, openPostgres } from "../../bridge/src/store/engines.js"
import { MIGRATIONS } from "../../bridge/src/store/migrations.js"
import type { SqlStore } from "../../bridge/src/store/sql-store.js"
import type { ReadingRow } from "../../bridge/src/store/store.js"
import { insertReadings } from "../../testkit/store-writes.js"
import { hours, type Flow } from "../store-contract-dmas.js"
import { dropSchema, PG_URL, uid } from "../helpers.js"

const HOUR = 3_600_000
const DAY = 24 * HOUR
const FEB = Date.parse("2031-02-01T00:00:00Z")
const MAR = Date.parse("2031-03-01T00:00:00Z")
const APR = Date.parse("2031-04-01T00:00:00Z")

const dma = (dmaId: string, o: Partial<DmaInput> = {}): DmaInput => ({
  dmaId,
  name: dmaId,
  parentId: null,
  boundary: null,
  inflow: [],
  outflow: [],
  customers: [],
  nightFlow: NIGHT_FLOW_DEFAULTS,
  ...o,
})

const flow = (meterId: string, k: number): Flow => ({
  meterId,
  fwd: (t) => k * 10 * (1 + ((t / HOUR) % 7)),
  rev: (t) => ((t / HOUR) % 24 === 3 ? k : 0),
  total: 1000 * k,
  seq: 1,
})

for (const engine of ["postgres", "pglite"] as const) {
  describe(`dma district days (${engine})`, () => {
    let store: SqlStore
    let schema = ""
    beforeAll(async () => {
      schema = `t_${randomBytes(6).toString("hex")}`
      store = (engine === "postgres" ? await openPostgres(PG_URL, { schema }) : await openPglite(undefined)) as SqlStore
    }, 60_000)
    afterAll(async () => {
      await store?.close()
      if (engine === "postgres") await dropSchema(schema)
    })

    async function register(meterId: string, district: string | null) {
      await store.registerMeter(meterId, new Date("2030-01-01T00:00:00Z"))
      if (district) await store.setLocation(meterId, { lat: 45, lon: 7, address: null, district })
    }
    async function put(rows: ReadingRow[], f: Flow) {
      const claim = await insertReadings(store, { meterId: f.meterId, boot: 1, seq: f.seq++ }, rows, new Date())
      expect(claim.kind).toBe("stored")
    }
    /** Stores the days [from, to) of `f`, a frame a day; returns the frames of the days in `withheld`, not stored. */
    async function days(f: Flow, from: number, to: number, withheld: number[] = []) {
      const kept = new Map<number, ReadingRow[]>()
      for (let t = from; t < to; t += DAY) {
        const rows = hours(f, t, t + DAY)
        if (withheld.includes(t)) kept.set(t, rows)
        else await put(rows, f)
      }
      return kept
    }

    const queries = (dmaIds?: string[]): DmaBalanceQuery[] => [
      { dmaIds, bucket: "day", from: new Date(FEB), to: new Date(MAR + 3 * DAY) },
      { dmaIds, bucket: "month", from: new Date(FEB), to: new Date(APR) },
    ]
    /** The balances from the district days, each equal to the per-meter one. */
    async function same(dmaIds?: string[]) {
      const out: DmaBalanceRow[][] = []
      for (const q of queries(dmaIds)) {
        const fast = await store.dmaBalance(q)
        expect(fast).toEqual(await dmaBalancePerMeter(store.db, q))
        out.push(fast)
      }
      return out
    }
    /** The three tables as ingest and the triggers left them equal their refill from rollup_day. */
    async function refillSame() {
      const dump = async () => {
        const out: unknown[] = []
        for (const [t, k, nonzero] of [
          [DISTRICT_DAYS, "district, bucket", "complete <> 0 OR water <> 0"],
          [METER_MONTHS, "meter_id, month", "complete_days <> 0"],
          [DISTRICT_MONTHS, "district, month", "complete <> 0"],
          [DISTRICT_METERS, "district", "meters <> 0"],
        ])
          out.push(
            (await store.db.query(`SELECT * FROM ${t} WHERE ${nonzero} ORDER BY ${k}`)).rows.map((r) =>
              JSON.stringify(r),
            ),
          )
        return out
      }
      const kept = await dump()
      await refillDmaDays(store.db)
      expect(await dump()).toEqual(kept)
    }

    test("a late frame completing a day turns it and the next day final, with the per-meter numbers; only those days and their month change", async () => {
      const a = uid("dma")
      const [c1, c2, bulk, named] = [uid("c"), uid("c"), uid("in"), uid("x")]
      const customers = [flow(c1, 1), flow(c2, 2), flow(named, 3)]
      const inflow: Flow = {
        meterId: bulk,
        fwd: (t) => customers.reduce((s, c) => s + c.fwd(t), 0) + 100,
        total: 0,
        seq: 1,
      }
      await register(c1, a)
      await register(c2, a)
      await register(bulk, a) // a bulk meter registered in its DMA's district: not a customer there
      await register(named, null) // an explicit customer from no district
      expect((await store.putDma(dma(a, { inflow: [bulk], customers: [named] }), new Date())).kind).toBe("stored")
      const LATE = FEB + 9 * DAY
      const withheld = await days(customers[0], FEB, MAR, [LATE])
      for (const f of customers.slice(1)) await days(f, FEB, MAR)
      await days(inflow, FEB, MAR)

      const [before, beforeMonths] = await same([a])
      const provisional = (rows: DmaBalanceRow[]) => rows.filter((r) => r.provisional).map((r) => r.start.getTime())
      // the withheld day and the next (its first hour charged against the day before) are provisional, and March
      expect(provisional(before).filter((t) => t < MAR)).toEqual([LATE, LATE + DAY])
      expect(beforeMonths.map((r) => [r.provisional, r.meters, r.completeMeters])).toEqual([
        [true, 4, 3],
        [true, 4, 0],
      ])

      await put(withheld.get(LATE)!, customers[0])
      const [after, afterMonths] = await same([a])
      const changed = after.filter((r, i) => JSON.stringify(r) !== JSON.stringify(before[i]))
      expect(changed.map((r) => [r.start.getTime(), r.provisional])).toEqual([
        [LATE, false],
        [LATE + DAY, false],
      ])
      expect(after[9].lossesMl).toBe(24 * 100)
      expect(after[10].lossesMl).toBe(24 * 100)
      expect(afterMonths.map((r) => [r.provisional, r.completeMeters, r.lossesMl])).toEqual([
        [false, 4, 28 * 24 * 100],
        [true, 0, 0],
      ])
      expect(afterMonths[1]).toEqual(beforeMonths[1])
      await same()
      await refillSame()
    })

    test("explicit members changed, a DMA created on a district with history, a DMA deleted: the per-meter numbers", async () => {
      const [p, q] = [uid("dma"), uid("dma")]
      const [p1, p2, q1, q2, bulk] = [uid("p"), uid("p"), uid("q"), uid("q"), uid("in")]
      const flows = [flow(p1, 1), flow(p2, 2), flow(q1, 3), flow(q2, 4), flow(bulk, 20)]
      for (const [m, d] of [
        [p1, p],
        [p2, p],
        [q1, q],
        [q2, q],
        [bulk, null],
      ] as const)
        await register(m, d)
      expect((await store.putDma(dma(p, { inflow: [bulk] }), new Date())).kind).toBe("stored")
      // days 1-5 of February, q2's third day withheld for good
      for (const f of flows) await days(f, FEB, FEB + 5 * DAY, f.meterId === q2 ? [FEB + 2 * DAY] : [])
      await same([p, q])
      // p2 becomes p's outflow (explicit, in p's district), q1 an explicit customer of p
      expect((await store.putDma(dma(p, { inflow: [bulk], outflow: [p2], customers: [q1] }), new Date())).kind).toBe(
        "stored",
      )
      const [d1] = await same([p, q])
      expect(d1[0].meters).toBe(4)
      // a DMA on district q, whose meters have history; q1 also drains it
      expect((await store.putDma(dma(q, { outflow: [q1] }), new Date())).kind).toBe("stored")
      const [d2] = await same([p, q])
      expect(d2.filter((r) => r.dmaId === q && r.start.getTime() === FEB)[0]).toMatchObject({ meters: 2 })
      // p loses its explicit members
      expect((await store.putDma(dma(p), new Date())).kind).toBe("stored")
      await same([p, q])
      expect(await store.deleteDma(q)).toBe("deleted")
      await same([p, q])
      await refillSame()
    })

    test("a meter moving district takes its days and complete months along: the per-meter numbers for both DMAs", async () => {
      const [u, v] = [uid("dma"), uid("dma")]
      const [u1, u2, v1] = [uid("u"), uid("u"), uid("v")]
      const flows = [flow(u1, 1), flow(u2, 2), flow(v1, 3)]
      await register(u1, u)
      await register(u2, u)
      await register(v1, v)
      for (const d of [u, v]) expect((await store.putDma(dma(d), new Date())).kind).toBe("stored")
      // all of February and three days of March: u2's February complete, its March not
      for (const f of flows) await days(f, FEB, MAR + 3 * DAY)
      const [, m0] = await same([u, v])
      expect(m0.map((r) => [r.dmaId === u, r.meters, r.completeMeters])).toEqual(
        expect.arrayContaining([
          [true, 2, 2],
          [false, 1, 1],
        ]),
      )
      await store.setLocation(u2, { lat: 45, lon: 7, address: null, district: v })
      const [, m1] = await same([u, v])
      expect(m1.filter((r) => r.start.getTime() === FEB).map((r) => r.completeMeters)).toEqual([1, 2])
      await store.setLocation(u2, null) // no district: in no DMA
      await same([u, v])
      await store.setLocation(u2, { lat: 45, lon: 7, address: null, district: u })
      const [, m2] = await same([u, v])
      expect(m2).toEqual(m0)
      await refillSame()
    })
    test("the migration step fills the district days of a data tier from before it: the per-meter numbers", async () => {
      const [w, w1, w2, bulk] = [uid("dma"), uid("w"), uid("w"), uid("in")]
      const flows = [flow(w1, 1), flow(w2, 2), flow(bulk, 9)]
      await register(w1, w)
      await register(w2, w)
      await register(bulk, null)
      expect((await store.putDma(dma(w, { inflow: [bulk] }), new Date())).kind).toBe("stored")
      for (const f of flows) await days(f, FEB + 20 * DAY, MAR + 2 * DAY, f === flows[0] ? [FEB + 25 * DAY] : [])
      const kept = await same([w])
      // the data tier as it was before the step: none of its tables, functions or triggers
      const step = MIGRATIONS.find((m) => m.name === "dma district days")!
      await store.db.transaction(async (tx) => {
        for (const t of [DISTRICT_DAYS, METER_MONTHS, DISTRICT_MONTHS, DISTRICT_METERS])
          await tx.query(`DROP TABLE ${t}`)
        await tx.query(`DROP FUNCTION dma_days_meter_district() CASCADE`)
        await tx.query(`DROP FUNCTION dma_days_move(text, text, integer)`)
      })
      await store.db.transaction(async (tx) => {
        for (const sql of step.up as string[]) await tx.query(sql)
      })
      expect(await same([w])).toEqual(kept)
      await same()
      await refillSame()
    })
  })
}
