// The pure parts of the DMAs (issue 25): a boundary is a closed, bounded Polygon or MultiPolygon;
// the night-flow rules judge the latest complete night against the nights before it; the balance's
// periods hold the right number of rollup buckets.
import { expect, test } from "vitest"
import { boundaryError, MAX_BOUNDARY_POSITIONS } from "../../bridge/src/dma/geojson.js"
import { judgeCustomer, judgeDma, median } from "../../bridge/src/dma/night-flow.js"
import { periods } from "../../bridge/src/store/dma-balance.js"
import { NIGHT_FLOW_DEFAULTS } from "../../bridge/src/store/dmas.js"

const ring = [
  [7, 45],
  [7.1, 45],
  [7.1, 45.1],
  [7, 45],
]

test("a boundary is a closed Polygon or MultiPolygon in range, of bounded size", () => {
  expect(boundaryError({ type: "Polygon", coordinates: [ring] })).toBeUndefined()
  expect(boundaryError({ type: "MultiPolygon", coordinates: [[ring], [ring, ring]] })).toBeUndefined()
  expect(boundaryError({ type: "Point", coordinates: [7, 45] })).toMatch(/Polygon or a MultiPolygon/)
  expect(boundaryError({ type: "Polygon", coordinates: [ring.slice(0, 3)] })).toMatch(/at least 4 positions/)
  expect(boundaryError({ type: "Polygon", coordinates: [[...ring.slice(0, 3), [7, 45.2]]] })).toMatch(
    /ends where it starts/,
  )
  expect(boundaryError({ type: "Polygon", coordinates: [[[7, 91], ...ring.slice(1, 3), [7, 91]]] })).toMatch(/±90/)
  expect(boundaryError({ type: "Polygon", coordinates: [[["7", 45], ...ring.slice(1)]] })).toMatch(/position 0/)
  expect(boundaryError({ type: "Polygon", coordinates: [ring], properties: {} })).toMatch(/only type and coordinates/)
  expect(boundaryError([ring])).toMatch(/geometry object/)
  const big = Array.from({ length: MAX_BOUNDARY_POSITIONS }, (_, i) => [7 + i / 1e6, 45])
  big.push(big[0])
  expect(boundaryError({ type: "Polygon", coordinates: [big] })).toMatch(/at most 10000 positions/)
})

const night = (i: number, min: number | null, complete = true) => ({
  night: `2030-01-${String(i + 1).padStart(2, "0")}`,
  minInputMlPerH: min,
  at: null,
  customersMl: null,
  hours: 2,
  complete,
})

test("leak onset: the latest complete night above the median of the nights before by both thresholds", () => {
  const r = { ...NIGHT_FLOW_DEFAULTS, riseMlPerH: 1000, risePct: 20 }
  expect(judgeDma([night(0, 5000)], r)).toBeUndefined() // no night to compare with
  expect(judgeDma([night(0, 5000), night(1, 5900)], r)).toMatchObject({ active: false, baseline: 5000 })
  expect(judgeDma([night(0, 5000), night(1, 7000)], r)).toMatchObject({ active: true, value: 7000 })
  // 20 % of a large baseline beats the absolute threshold
  expect(judgeDma([night(0, 100_000), night(1, 110_000)], r)).toMatchObject({ active: false })
  // an incomplete night is not judged; the median resists one odd night
  const ns = [night(0, 5000), night(1, 50_000), night(2, 5100), night(3, 5200), night(4, 90_000, false)]
  expect(judgeDma(ns, r)).toMatchObject({ active: false, night: "2030-01-04", baseline: 5100 })
  expect(median([3, 1, 2, 10])).toBe(2.5)
})

test("customer leak: never at zero for its nights in a row; cleared by a night at zero", () => {
  const r = { ...NIGHT_FLOW_DEFAULTS, customerNights: 3 }
  const m = (i: number, min: number, complete = true) => ({
    meterId: "m",
    night: `2030-01-0${i + 1}`,
    minMlPerH: min,
    complete,
  })
  expect(judgeCustomer([m(0, 10), m(1, 20)], r)).toBeUndefined()
  expect(judgeCustomer([m(0, 0), m(1, 30), m(2, 10), m(3, 20)], r)).toEqual({
    active: true,
    value: 10,
    night: "2030-01-04",
  })
  expect(judgeCustomer([m(0, 30), m(1, 10), m(2, 0, false), m(3, 0)], r)).toEqual({
    active: false,
    value: 0,
    night: "2030-01-04",
  })
  // an incomplete night neither breaks nor makes a run
  expect(judgeCustomer([m(0, 30), m(1, 10), m(2, 0, false), m(3, 5)], r)).toMatchObject({ active: true })
})

test("a balance's periods: hours, days, and months of their days (a partial last month too)", () => {
  const p = periods("month", new Date("2024-01-01T00:00:00Z"), new Date("2024-03-15T00:00:00Z"))
  expect(p.map((x) => [x.start.toISOString().slice(0, 10), x.buckets])).toEqual([
    ["2024-01-01", 31],
    ["2024-02-01", 29],
    ["2024-03-01", 14],
  ])
  expect(periods("hour", new Date("2024-01-01T00:00:00Z"), new Date("2024-01-01T03:00:00Z")).length).toBe(3)
  expect(
    periods("day", new Date("2024-01-01T00:00:00Z"), new Date("2024-01-08T00:00:00Z")).every((x) => x.buckets === 1),
  ).toBe(true)
})
