// The district metered areas part of the Store contract (issue 25 items 1-3), run by
// describeStoreContract on both engines (and with every month compacted): the network model's
// registry and its refusals; the water balance equals a leak injected between an inflow meter and
// the customers, exactly, by hour, day and month, with a bidirectional bulk meter draining into a
// second DMA; a frame withheld makes its periods provisional with a wrong number, and storing it
// late turns them final with the right one; the night-flow check raises a DMA's leak onset within
// the night it starts and a customer-side leak after its nights, each exactly once.
import { expect, test } from "vitest"
import { checkNightFlows } from "../bridge/src/dma/night-check.js"
import { CUSTOMER_NIGHT_FLOW, dmaAlarmId, NIGHT_FLOW_RISE } from "../bridge/src/dma/night-flow.js"
import { NIGHT_FLOW_DEFAULTS, type DmaInput } from "../bridge/src/store/dmas.js"
import type { ReadingRow, Store } from "../bridge/src/store/store.js"
import { readingRow } from "../testkit/rows.js"
import { insertReadings } from "../testkit/store-writes.js"
import { uid } from "./helpers.js"

const HOUR = 3_600_000
const DAY = 24 * HOUR

/** A meter whose hourly forward (and reverse) volumes are given by functions of the hour's start. */
export interface Flow {
  meterId: string
  fwd: (t: number) => number
  rev?: (t: number) => number
  total: number
  seq: number
}

/** The hourly readings of `f` for hours [from, to) (interval 3600 s), totals carried on. */
export function hours(f: Flow, from: number, to: number): ReadingRow[] {
  const rows: ReadingRow[] = []
  for (let t = from, idx = 0; t < to; t += HOUR, idx++) {
    const v = f.fwd(t)
    f.total += v
    rows.push(
      readingRow(f.meterId, new Date(t), {
        intervalS: 3600,
        seq: f.seq,
        idx,
        volumeMl: v,
        reverseMl: f.rev?.(t) ?? 0,
        waterTotalMl: f.total,
      }),
    )
  }
  return rows
}

/** Stores the rows as one frame through the ingest path (the ledger's claim, then the rows). */
async function store1(store: Store, f: Flow, rows: ReadingRow[]) {
  const claim = await insertReadings(store, { meterId: f.meterId, boot: 1, seq: f.seq++ }, rows, new Date())
  expect(claim.kind).toBe("stored")
}

async function register(store: Store, meterId: string, district: string | null) {
  await store.registerMeter(meterId, new Date("2030-01-01T00:00:00Z"))
  if (district) await store.setLocation(meterId, { lat: 45, lon: 7, address: null, district })
}

/** A DMA without meters or boundary, the defaults overridden by `o`. */
export const dma = (dmaId: string, o: Partial<DmaInput> = {}): DmaInput => ({
  dmaId,
  name: `area ${dmaId}`,
  parentId: null,
  boundary: null,
  inflow: [],
  outflow: [],
  customers: [],
  nightFlow: NIGHT_FLOW_DEFAULTS,
  ...o,
})

export function dmaContract(getStore: () => Store) {
  test("dmas: stored with their meters; district meters are customers unless named; refusals store nothing", async () => {
    const store = getStore()
    const [a, b] = [uid("dma"), uid("dma")]
    const [bulk, c1, c2, extra] = [uid("bk"), uid("c"), uid("c"), uid("x")]
    await register(store, bulk, a)
    await register(store, c1, a)
    await register(store, c2, a)
    await register(store, extra, null)
    const boundary = {
      type: "Polygon" as const,
      coordinates: [
        [
          [7, 45],
          [7.1, 45],
          [7.1, 45.1],
          [7, 45],
        ],
      ],
    }
    const put = await store.putDma(dma(a, { boundary, inflow: [bulk], customers: [extra] }), new Date())
    expect(put.kind === "stored" && put.created).toBe(true)
    const again = await store.putDma(
      dma(a, { boundary, inflow: [bulk], customers: [extra], name: "renamed" }),
      new Date(),
    )
    expect(again.kind === "stored" && !again.created).toBe(true)
    const got = await store.getDma(a)
    expect(got).toMatchObject({ dmaId: a, name: "renamed", boundary, inflow: [bulk], outflow: [], customers: [extra] })
    expect(got?.nightFlow).toEqual(NIGHT_FLOW_DEFAULTS)
    expect(await store.dmaMembers(a)).toEqual(
      [
        { meterId: c1, role: "customer", source: "district" },
        { meterId: c2, role: "customer", source: "district" },
        { meterId: extra, role: "customer", source: "explicit" },
        { meterId: bulk, role: "inflow", source: "explicit" },
      ].sort((x, y) => (x.role + x.meterId < y.role + y.meterId ? -1 : 1)),
    )

    // a sub-DMA; its parent cannot become its child; unknown parents and meters are refused
    expect((await store.putDma(dma(b, { parentId: a }), new Date())).kind).toBe("stored")
    expect(await store.putDma(dma(a, { parentId: b }), new Date())).toMatchObject({ kind: "refused", reason: "cycle" })
    expect(await store.putDma(dma(uid("dma"), { parentId: uid("no") }), new Date())).toMatchObject({
      kind: "refused",
      reason: "parent",
    })
    const ghost = uid("ghost")
    expect(await store.putDma(dma(a, { outflow: [ghost] }), new Date())).toMatchObject({
      kind: "refused",
      reason: "meters",
    })
    expect((await store.getDma(a))?.outflow).toEqual([])
    expect((await store.listDmas()).map((d) => d.dmaId)).toEqual(expect.arrayContaining([a, b]))

    // a parent goes after its sub-DMAs
    expect(await store.deleteDma(a)).toBe("children")
    expect(await store.deleteDma(b)).toBe("deleted")
    expect(await store.deleteDma(a)).toBe("deleted")
    expect(await store.deleteDma(a)).toBe("missing")
    expect(await store.getDma(a)).toBeUndefined()
  })

  test("dma balance: losses equal the injected leak by hour, day and month; a late frame turns provisional into final", async () => {
    const store = getStore()
    const [a, b] = [uid("dma"), uid("dma")]
    const D1 = Date.parse("2036-06-01T00:00:00Z")
    const D2 = D1 + DAY
    const LEAK = 250 // mL per hour between the inflow meter and the customers
    const customers: Flow[] = [1, 2, 3].map((i) => ({
      meterId: uid("cust"),
      fwd: (t: number) => i * 10 * ((t / HOUR) % 5),
      total: 1000 * i,
      seq: 1,
    }))
    // drains A into B; hour 5 of each day also flows back 30 mL (reverse)
    const rev = (t: number) => ((t / HOUR) % 24 === 5 ? 30 : 0)
    const out: Flow = { meterId: uid("out"), fwd: () => 100, rev, total: 0, seq: 1 }
    const inflow: Flow = {
      meterId: uid("in"),
      fwd: (t) => customers.reduce((s, c) => s + c.fwd(t), 0) + LEAK + 100 - rev(t),
      total: 5_000_000,
      seq: 1,
    }
    for (const c of customers) await register(store, c.meterId, a)
    await register(store, inflow.meterId, a) // a bulk meter in the district is not a customer
    await register(store, out.meterId, null)
    expect((await store.putDma(dma(a, { inflow: [inflow.meterId], outflow: [out.meterId] }), new Date())).kind).toBe(
      "stored",
    )
    expect((await store.putDma(dma(b, { inflow: [out.meterId] }), new Date())).kind).toBe("stored")

    for (const f of [...customers, inflow, out]) await store1(store, f, hours(f, D1, D1 + DAY))
    // day 2: the first customer's last hour is withheld
    const [late] = customers
    const day2 = hours(late, D2, D2 + DAY)
    await store1(store, late, day2.slice(0, -1))
    for (const f of [...customers.slice(1), inflow, out]) await store1(store, f, hours(f, D2, D2 + DAY))

    const days = () => store.dmaBalance({ dmaIds: [a], bucket: "day", from: new Date(D1), to: new Date(D2 + DAY) })
    const before = await days()
    expect(before.map((r) => [r.start.toISOString(), r.lossesMl, r.meters, r.completeMeters, r.provisional])).toEqual([
      ["2036-06-01T00:00:00.000Z", 24 * LEAK, 5, 5, false],
      // the missing hour is not billed yet: the losses are too high by it, and the day says so
      ["2036-06-02T00:00:00.000Z", 24 * LEAK + late.fwd(D2 + 23 * HOUR), 5, 4, true],
    ])
    expect(before[1].coverage).toBe(0.8)
    const d1 = before[0]
    const billed = customers.reduce(
      (s, c) => s + [...Array(24).keys()].reduce((x, h) => x + c.fwd(D1 + h * HOUR), 0),
      0,
    )
    expect(d1.billedMl).toBe(billed)
    expect(d1.inflowMl - d1.outflowMl).toBe(d1.systemInputMl)
    expect(d1.outflowMl).toBe(24 * 100 - 30)
    expect(d1.nrwShare).toBeCloseTo((24 * LEAK) / d1.systemInputMl, 12)

    // the late frame completes day 2: final, and the right number
    await store1(store, late, day2.slice(-1))
    const after = await days()
    expect(after.map((r) => [r.lossesMl, r.coverage, r.provisional])).toEqual([
      [24 * LEAK, 1, false],
      [24 * LEAK, 1, false],
    ])
    expect(after[0]).toEqual(before[0]) // a period the frame does not touch is unchanged

    // by hour: every hour's losses are the leak
    const hourly = await store.dmaBalance({ dmaIds: [a], bucket: "hour", from: new Date(D2), to: new Date(D2 + DAY) })
    expect(hourly.length).toBe(24)
    expect(hourly.every((r) => r.lossesMl === LEAK && !r.provisional)).toBe(true)
    // by month: two days of June stored, so the month is provisional, with both days' leak
    const month = await store.dmaBalance({
      dmaIds: [a, b],
      bucket: "month",
      from: new Date(D1),
      to: new Date(Date.parse("2036-07-01T00:00:00Z")),
    })
    expect(month.map((r) => [r.dmaId, r.lossesMl, r.provisional])).toEqual([
      [a, 48 * LEAK, true],
      [b, 2 * (24 * 100 - 30), true],
    ])
  })

  test("night flow: a DMA's leak onset alarms within its night, a customer's never-zero nights after three, once each", async () => {
    const store = getStore()
    const n = uid("dma")
    const N1 = Date.parse("2036-07-01T00:00:00Z")
    const ONSET = N1 + 3 * DAY // a pipe bursts at midnight before the fourth night
    const BURST = 100_000 // mL/h
    const BACKGROUND = 2000
    const day = (t: number) => ((t / HOUR) % 24 >= 6 ? 500 : 0)
    const quiet: Flow = { meterId: uid("k"), fwd: day, total: 0, seq: 1 }
    const dripping: Flow = { meterId: uid("k"), fwd: (t) => day(t) + 1000, total: 0, seq: 1 }
    const inflow: Flow = {
      meterId: uid("nin"),
      fwd: (t) => quiet.fwd(t) + dripping.fwd(t) + BACKGROUND + (t >= ONSET ? BURST : 0),
      total: 0,
      seq: 1,
    }
    for (const f of [quiet, dripping]) await register(store, f.meterId, n)
    await register(store, inflow.meterId, null)
    const cfg = { ...NIGHT_FLOW_DEFAULTS, customerNights: 3 }
    expect((await store.putDma(dma(n, { inflow: [inflow.meterId], nightFlow: cfg }), new Date())).kind).toBe("stored")
    const mine = (edges: Awaited<ReturnType<typeof checkNightFlows>>) =>
      edges.filter((e) => e.dmaId === n).map((e) => [e.meterId, e.type, e.active, e.value, e.night])

    for (const f of [quiet, dripping, inflow]) await store1(store, f, hours(f, N1, ONSET))
    // after three nights: no leak onset, the dripping customer alarmed (three nights above zero)
    const third = await checkNightFlows(store, new Date(ONSET))
    expect(mine(third)).toEqual([[dripping.meterId, CUSTOMER_NIGHT_FLOW, true, 1000, "2036-07-03"]])
    const night = await store.dmaNightFlow({
      dmaId: n,
      from: new Date(N1),
      to: new Date(ONSET),
      window: cfg,
      meters: true,
    })
    expect(night.dma.map((x) => [x.night, x.minInputMlPerH, x.customersMl, x.complete])).toEqual([
      ["2036-07-01", BACKGROUND + 1000, 1000, true],
      ["2036-07-02", BACKGROUND + 1000, 1000, true],
      ["2036-07-03", BACKGROUND + 1000, 1000, true],
    ])
    expect(night.meters.filter((x) => x.meterId === quiet.meterId).map((x) => x.minMlPerH)).toEqual([0, 0, 0])

    // the fourth night, up to 05:00: the onset is found the same night
    for (const f of [quiet, dripping, inflow]) await store1(store, f, hours(f, ONSET, ONSET + 5 * HOUR))
    const at = new Date(ONSET + 5 * HOUR)
    expect(mine(await checkNightFlows(store, at))).toEqual([
      [dmaAlarmId(n), NIGHT_FLOW_RISE, true, BACKGROUND + 1000 + BURST, "2036-07-04"],
    ])
    // checked again (another bridge, the next run): nothing more
    expect(mine(await checkNightFlows(store, new Date(at.getTime() + 60_000)))).toEqual([])
    const edges = await store.alarms({ meterId: dmaAlarmId(n) })
    expect(edges.map((e) => [e.type, e.active, e.source])).toEqual([[NIGHT_FLOW_RISE, true, "bridge"]])
    expect((await store.alarms({ meterId: dripping.meterId, open: true })).map((e) => e.type)).toEqual([
      CUSTOMER_NIGHT_FLOW,
    ])
  })
}
