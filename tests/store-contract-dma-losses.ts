// Apparent losses and zone pressure of a DMA (issue 25 items 4-5), part of the Store contract run
// on both engines (and with every month compacted, so hours come from readings_between): each rule
// fires for exactly the meter planted for it, with its numbers, and for none of the controls (a
// meter consuming normally, one with low but registering flow, one at zero for fewer days than the
// rule asks, a tamper event with no drop, a backflow alarm cleared before the period); the zone
// pressure is time-weighted per meter and averaged over customer meters, and the ILI equals
// Lambert's formula computed by hand.
import { expect, test } from "vitest"
import { NIGHT_FLOW_DEFAULTS, type DmaInput } from "../bridge/src/store/dmas.js"
import type { AlarmEvent, ReadingRow, Store } from "../bridge/src/store/store.js"
import { readingRow } from "../testkit/rows.js"
import { insertAlarm } from "../testkit/store-writes.js"
import { uid } from "./helpers.js"

const HOUR = 3_600_000
const DAY = 24 * HOUR
const P0 = Date.parse("2037-03-01T00:00:00Z")
const DAYS = 10
/** Readings start this many days before the period (the drop baseline reads them). */
const BEFORE = 7

const day = (t: number) => Math.floor((t - P0) / DAY)
const hourOf = (t: number) => (t / HOUR) % 24
/** A household: 20 L an hour from 06:00 to 22:00, a 1 L trickle at 22:00, nothing at night. */
const base = (t: number) => (hourOf(t) >= 6 && hourOf(t) < 22 ? 20_000 : hourOf(t) === 22 ? 1000 : 0)

interface Planted {
  meterId: string
  fwd: (t: number) => number
  rev?: (t: number) => number
  pressure?: (t: number) => number | null
}

/** Every meter's hourly readings of [from, to) as frames of 96 intervals, stored in one ingest batch. */
async function storeHours(store: Store, meters: Planted[], from: number, to: number) {
  const frames: { meterId: string; seq: number; rows: ReadingRow[] }[] = []
  for (const m of meters) {
    let total = 0
    let seq = 1
    for (let t0 = from; t0 < to; t0 += 96 * HOUR, seq++) {
      const rows: ReadingRow[] = []
      for (let t = t0, idx = 0; t < Math.min(to, t0 + 96 * HOUR); t += HOUR, idx++) {
        total += m.fwd(t)
        const p = m.pressure?.(t) ?? null
        rows.push(
          readingRow(m.meterId, new Date(t), {
            intervalS: 3600,
            seq,
            idx,
            volumeMl: m.fwd(t),
            reverseMl: m.rev?.(t) ?? 0,
            waterTotalMl: total,
            pressureAvgPa: p,
          }),
        )
      }
      frames.push({ meterId: m.meterId, seq, rows })
    }
  }
  await storeFrames(store, frames)
}

async function storeFrames(store: Store, frames: { meterId: string; seq: number; rows: ReadingRow[] }[]) {
  const claims = await store.ingestBatch(async (tx) => {
    const out = await tx.claimFrames(
      frames.map((f) => ({ meterId: f.meterId, boot: 1, seq: f.seq, kind: "readings", at: new Date() })),
    )
    await tx.writeReadings(frames.flatMap((f) => f.rows))
    return out
  })
  expect(claims.every((c) => c.kind === "stored")).toBe(true)
}

async function customers(store: Store, district: string, ids: string[]) {
  for (const m of ids) {
    await store.registerMeter(m, new Date("2030-01-01T00:00:00Z"))
    await store.setLocation(m, { lat: 45, lon: 7, address: null, district })
  }
}

const dma = (dmaId: string, o: Partial<DmaInput> = {}): DmaInput => ({
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

let alarmSeq = 1
const alarm = (store: Store, meterId: string, type: string, active: boolean, ts: number) => {
  const e: AlarmEvent = { meterId, boot: 2, seq: alarmSeq++, type, active, ts: new Date(ts), value: 0 }
  return insertAlarm(store, e, new Date())
}

export function dmaLossesContract(getStore: () => Store) {
  test("apparent losses: stuck, low-flow, tamper-drop and reverse-flow each found for the planted meter only", async () => {
    const store = getStore()
    const id = uid("dmal")
    const m = (name: string) => uid(`al-${name}`)
    const EVENT = P0 + 5 * DAY + 12 * HOUR
    const planted = {
      normal1: { meterId: m("n1"), fwd: base },
      normal2: { meterId: m("n2"), fwd: base },
      normal3: { meterId: m("n3"), fwd: base },
      // low but registering: three hours of 2 L in the morning
      low: { meterId: m("low"), fwd: (t: number) => (hourOf(t) >= 7 && hourOf(t) < 10 ? 2000 : 0) },
      // the trickle at 22:00 never registers
      under: { meterId: m("under"), fwd: (t: number) => (hourOf(t) === 22 ? 0 : base(t)) },
      // zero from day 4 of the period on
      stuck: { meterId: m("stuck"), fwd: (t: number) => (day(t) >= 4 ? 0 : base(t)) },
      // zero for two days only (a weekend away)
      away: { meterId: m("away"), fwd: (t: number) => (day(t) === 5 || day(t) === 6 ? 0 : base(t)) },
      // a magnet on day 5, then 30 % of the usual use from day 6 on
      magnet: { meterId: m("magnet"), fwd: (t: number) => (day(t) >= 6 ? base(t) * 0.3 : base(t)) },
      // a tamper edge, the use unchanged
      opened: { meterId: m("opened"), fwd: base },
      // 500 mL backwards at 03:00 on days 2 and 7
      reverse: {
        meterId: m("rev"),
        fwd: base,
        rev: (t: number) => (hourOf(t) === 3 && (day(t) === 2 || day(t) === 7) ? 500 : 0),
      },
      backflow: { meterId: m("bf"), fwd: base },
    } satisfies Record<string, Planted>
    const all = Object.values(planted)
    await customers(
      store,
      id,
      all.map((p) => p.meterId),
    )
    expect((await store.putDma(dma(id), new Date())).kind).toBe("stored")
    await storeHours(store, all, P0 - BEFORE * DAY, P0 + DAYS * DAY)
    expect((await alarm(store, planted.magnet.meterId, "ALARM_TYPE_MAGNETIC_FIELD", true, EVENT)).kind).toBe("stored")
    await alarm(store, planted.opened.meterId, "ALARM_TYPE_TAMPER", true, EVENT)
    await alarm(store, planted.backflow.meterId, "ALARM_TYPE_BACKFLOW", true, P0 + 8 * DAY)
    // a backflow raised and cleared before the period: not a finding
    await alarm(store, planted.normal2.meterId, "ALARM_TYPE_BACKFLOW", true, P0 - 3 * DAY)
    await alarm(store, planted.normal2.meterId, "ALARM_TYPE_BACKFLOW", false, P0 - 2 * DAY)

    const found = await store.dmaApparentLosses({ dmaId: id, from: new Date(P0), to: new Date(P0 + DAYS * DAY) })
    const name = new Map(Object.entries(planted).map(([k, v]) => [v.meterId, k]))
    expect(found.map((f) => [name.get(f.meterId), f.kind]).sort()).toEqual([
      ["backflow", "reverse-flow"],
      ["magnet", "tamper-drop"],
      ["reverse", "reverse-flow"],
      ["stuck", "stuck"],
      ["under", "low-flow"],
    ])
    const of = (k: keyof typeof planted) => found.find((f) => f.meterId === planted[k].meterId)!
    const dayText = (d: number) => new Date(P0 + d * DAY).toISOString().slice(0, 10)
    expect(of("stuck")).toMatchObject({ from: new Date(P0 + 4 * DAY), to: new Date(P0 + DAYS * DAY) })
    expect(of("stuck").evidence).toEqual({
      zeroDays: 6,
      days: [4, 5, 6, 7, 8, 9].map(dayText),
      lastNonZeroDay: dayText(3),
      // ten other customers, all consuming but `away` on its two days
      neighbours: [10, 10, 10, 10, 10, 10],
      neighboursConsuming: [10, 9, 9, 10, 10, 10],
      minNeighbourPct: 90,
    })
    const daily = 16 * 20_000 + 1000
    expect(of("under").evidence).toMatchObject({
      nonzeroHours: 16 * DAYS,
      zeroHours: 8 * DAYS,
      smallestNonzeroHourMl: 20_000,
      lowFlowMl: 5000,
      meanDailyMl: daily - 1000,
      dmaMedianDailyMl: daily,
    })
    expect(of("magnet")).toMatchObject({ from: new Date(P0 + 5 * DAY), to: new Date(P0 + DAYS * DAY) })
    expect(of("magnet").evidence).toEqual({
      alarmType: "ALARM_TYPE_MAGNETIC_FIELD",
      eventTs: new Date(EVENT).toISOString(),
      beforeMlPerDay: daily,
      beforeDays: 12, // 14 days asked, readings from 7 days before the period
      afterMlPerDay: 96_300, // 30 % of a day's 321 L
      afterDays: 4,
      dropPct: 70,
    })
    expect(of("reverse").evidence).toEqual({
      reverseMl: 1000,
      reverseDays: 2,
      days: [dayText(2), dayText(7)],
      backflowAlarmsRaised: 0,
      backflowOpenAtFrom: false,
      backflowOpenAtTo: false,
    })
    expect(of("backflow").evidence).toMatchObject({ reverseMl: 0, backflowAlarmsRaised: 1, backflowOpenAtTo: true })

    // neighbours asked to consume on 95 % of the days: `away`'s two days (90 %) split the run, and
    // the stuck meter's last three days (100 %) are the run left
    const cfg = (await store.getDma(id))!.losses
    const picky = await store.dmaApparentLosses({
      dmaId: id,
      from: new Date(P0),
      to: new Date(P0 + DAYS * DAY),
      config: { ...cfg, stuckNeighbourPct: 95 },
    })
    expect(picky.filter((f) => f.kind === "stuck").map((f) => [name.get(f.meterId), f.evidence.days])).toEqual([
      ["stuck", [7, 8, 9].map(dayText)],
    ])

    // the thresholds are the DMA's: three more days at zero asked of a stuck meter, and it is not one
    const strict = { ...(await store.getDma(id))!.losses, stuckDays: 7 }
    expect((await store.putDma(dma(id, { losses: strict }), new Date())).kind).toBe("stored")
    const again = await store.dmaApparentLosses({ dmaId: id, from: new Date(P0), to: new Date(P0 + DAYS * DAY) })
    expect(again.filter((f) => f.kind === "stuck")).toEqual([])
    expect(again.length).toBe(found.length - 1)
  })

  test("zone pressure: time-weighted per customer meter, averaged over them; the ILI is Lambert's by hand", async () => {
    const store = getStore()
    const id = uid("dmap")
    const [c1, c2, c3, inlet] = [uid("pc"), uid("pc"), uid("pc"), uid("pin")]
    const LEAK = 2000 // mL/h
    await customers(store, id, [c1, c2, c3])
    await store.registerMeter(inlet, new Date("2030-01-01T00:00:00Z"))
    const net = { mainsKm: 2.5, connections: 3, avgServiceLengthM: 10 }
    expect((await store.putDma(dma(id, { inflow: [inlet], ...net }), new Date())).kind).toBe("stored")
    expect(await store.getDma(id)).toMatchObject(net)
    await storeHours(
      store,
      [
        { meterId: c1, fwd: () => 1000, pressure: () => 450_000 },
        { meterId: c3, fwd: () => 500 }, // measures no pressure
        // the inlet's pressure is the zone's highest: not the zone's
        { meterId: inlet, fwd: () => 1500 + LEAK, pressure: () => 900_000 },
      ],
      P0,
      P0 + 2 * DAY,
    )
    // c2 reports every two hours a 30-minute interval at 6 bar and a 90-minute one at 2 bar:
    // 3 bar time-weighted (4 bar as a plain mean of its readings); it consumes nothing
    const rows: ReadingRow[] = []
    for (let t = P0, idx = 0; t < P0 + 2 * DAY; t += 2 * HOUR) {
      for (const [offset, s, pa] of [
        [0, 1800, 600_000],
        [1800_000, 5400, 200_000],
      ]) {
        rows.push(
          readingRow(c2, new Date(t + offset), {
            intervalS: s,
            seq: 1,
            idx: idx++,
            volumeMl: 0,
            reverseMl: 0,
            waterTotalMl: 0,
            pressureAvgPa: pa,
          }),
        )
      }
    }
    await storeFrames(store, [{ meterId: c2, seq: 1, rows }])

    const ans = await store.dmaPressure({ dmaId: id, bucket: "day", from: new Date(P0), to: new Date(P0 + 2 * DAY) })
    expect(ans.meters).toBe(2)
    expect(ans.avgPa).toBeCloseTo((450_000 + 300_000) / 2, 6)
    expect(ans.buckets.map((b) => [b.start.getTime(), Math.round(b.avgPa!), b.meters])).toEqual([
      [P0, 375_000, 2],
      [P0 + DAY, 375_000, 2],
    ])
    const byHour = await store.dmaPressure({ dmaId: id, bucket: "hour", from: new Date(P0), to: new Date(P0 + DAY) })
    expect(byHour.buckets.length).toBe(24)
    // an interval counts in the bucket it starts in: c2's hour 1 has no reading of its own
    expect(byHour.buckets.slice(0, 2).map((b) => [Math.round(b.avgPa!), b.meters])).toEqual([
      [375_000, 2],
      [450_000, 1],
    ])

    // by hand: P = 375 kPa / 9.80665 kPa per m; Lp = 3 × 10 m; CARL = 24 h × 2000 mL a day
    const P = 375_000 / 9806.65
    const uarl = (18 * 2.5 + 0.8 * 3 + 25 * 0.03) * P // 48.15 × 38.2394 = 1841.23 L/day
    expect(uarl).toBeCloseTo(1841.23, 2)
    expect(ans.ili).toMatchObject({ carlLPerDay: 48, privatePipeKm: 0.03, apparentLossesSubtracted: false })
    expect(ans.ili!.pressureM).toBeCloseTo(P, 9)
    expect(ans.ili!.uarlLPerDay).toBeCloseTo(uarl, 6)
    expect(ans.ili!.ili).toBeCloseTo(48 / uarl, 9)
    expect(ans.ili!.ili).toBeCloseTo(0.02607, 5)
    expect(ans.ili!.inValidatedRange).toBe(false) // 3 connections, far fewer than 3000

    // without the network's size: no ILI
    expect((await store.putDma(dma(id, { inflow: [inlet] }), new Date())).kind).toBe("stored")
    const bare = await store.dmaPressure({ dmaId: id, bucket: "day", from: new Date(P0), to: new Date(P0 + 2 * DAY) })
    expect(bare.ili).toBeNull()
    expect(bare.avgPa).toBe(ans.avgPa)
    // the network's size but no inflow meter: no system input, no real losses to compare
    expect((await store.putDma(dma(id, net), new Date())).kind).toBe("stored")
    const dry = await store.dmaPressure({ dmaId: id, bucket: "day", from: new Date(P0), to: new Date(P0 + 2 * DAY) })
    expect([dry.avgPa, dry.ili]).toEqual([ans.avgPa, null])
  })
}
