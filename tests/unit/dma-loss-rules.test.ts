// The apparent-loss rules and Lambert's ILI, pure (issue 25 items 4-5): the edges the store
// contract (tests/store-contract-dma-losses.ts) does not plant — a meter that did not report is not
// stuck, too few neighbours judge nothing, a DMA of coarse meters raises no under-registration, a
// tamper event with no day after it waits — and the UARL of a large network by hand.
import { describe, expect, test } from "vitest"
import { DAY_MS, judgeLosses, type LossInput, type MeterDay } from "../../bridge/src/store/dma-loss-rules.js"
import { infrastructureLeakageIndex } from "../../bridge/src/store/dma-pressure.js"
import { LOSSES_DEFAULTS } from "../../bridge/src/store/dma-store.js"

const FROM = Date.parse("2038-01-01T00:00:00Z")
const days = (meterId: string, n: number, water: (d: number) => number | null, complete = true): MeterDay[] =>
  Array.from({ length: n }, (_, d) => ({ meterId, day: FROM + d * DAY_MS, waterMl: water(d), reverseMl: 0, complete }))

const input = (o: Partial<LossInput>): LossInput => ({
  customers: [],
  days: [],
  hours: [],
  alarms: [],
  from: new Date(FROM),
  to: new Date(FROM + 5 * DAY_MS),
  cfg: LOSSES_DEFAULTS,
  ...o,
})

describe("stuck", () => {
  const neighbours = ["n1", "n2", "n3"].flatMap((m) => days(m, 5, () => 1000))
  test("five complete days at zero among consuming neighbours: stuck", () => {
    const found = judgeLosses(
      input({ customers: ["s", "n1", "n2", "n3"], days: [...neighbours, ...days("s", 5, () => 0)] }),
    )
    expect(found.map((f) => [f.meterId, f.kind, f.evidence.zeroDays])).toEqual([["s", "stuck", 5]])
  })
  test("days not complete (the meter did not report all of them) are not zero days", () => {
    const s = days("s", 5, () => 0, false)
    expect(judgeLosses(input({ customers: ["s", "n1", "n2", "n3"], days: [...neighbours, ...s] }))).toEqual([])
  })
  test("one neighbour is too few to compare with", () => {
    const found = judgeLosses(
      input({ customers: ["s", "n1"], days: [...days("n1", 5, () => 1000), ...days("s", 5, () => 0)] }),
    )
    expect(found).toEqual([])
  })
})

describe("low-flow", () => {
  const hours = (meterId: string, small: number, smallest: number) => ({
    meterId,
    nonzero: 100,
    zero: 50,
    small,
    smallestNonzeroMl: smallest,
  })
  const use = ["u", "a", "b"].flatMap((m) => days(m, 5, () => 300_000))
  test("no small hour while the neighbours have some: under-registration", () => {
    const found = judgeLosses(
      input({
        customers: ["u", "a", "b"],
        days: use,
        hours: [hours("u", 0, 20_000), hours("a", 3, 800), hours("b", 1, 900)],
      }),
    )
    expect(found.map((f) => [f.meterId, f.kind])).toEqual([["u", "low-flow"]])
  })
  test("no meter of the DMA registers small hours (a coarse resolution): nothing", () => {
    const found = judgeLosses(
      input({
        customers: ["u", "a", "b"],
        days: use,
        hours: [hours("u", 0, 20_000), hours("a", 0, 10_000), hours("b", 0, 10_000)],
      }),
    )
    expect(found).toEqual([])
  })
})

test("tamper-drop: an event on the period's last day has no day after it to judge", () => {
  const found = judgeLosses(
    input({
      customers: ["t"],
      days: days("t", 5, (d) => (d < 4 ? 300_000 : 0)),
      alarms: [{ meterId: "t", type: "ALARM_TYPE_TAMPER", active: true, ts: new Date(FROM + 4 * DAY_MS + 3_600_000) }],
    }),
  )
  expect(found).toEqual([])
})

test("ILI: Lambert's UARL for 200 km of mains, 10,000 connections, 15 m of private pipe at 4 bar", () => {
  const r = infrastructureLeakageIndex({
    lossesMl: 30 * 900_000_000, // 900 m³ a day for 30 days
    days: 30,
    pressurePa: 400_000,
    mainsKm: 200,
    connections: 10_000,
    avgServiceLengthM: 15,
    provisional: false,
  })
  // P = 400 / 9.80665 = 40.789 m; Lp = 150 km; UARL = (3600 + 8000 + 3750) × 40.789 = 626,106 L/day
  expect(r.pressureM).toBeCloseTo(40.7886, 4)
  expect(r.privatePipeKm).toBe(150)
  expect(r.uarlLPerDay).toBeCloseTo(15_350 * (400 / 9.80665), 6)
  expect(r.carlLPerDay).toBe(900_000)
  expect(r.ili).toBeCloseTo(900_000 / (15_350 * (400 / 9.80665)), 12)
  expect(r.ili).toBeCloseTo(1.4375, 3)
  expect(r.inValidatedRange).toBe(true)
})
