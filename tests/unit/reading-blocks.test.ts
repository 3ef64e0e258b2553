// A reading block decoded in Node (blocks.ts decodeBlock, from PostgreSQL's text form of its
// arrays: reading-columns.ts parseArray) gives back the readings encodeBlock coded: every coding
// (time, delta, counter, spread, raw), NULLs in every nullable channel, negative values, a
// register that goes down, extremes around a missing mean. The store suite (compaction-api)
// checks the same against what PostgreSQL and PGlite store.
import { describe, expect, test } from "vitest"
import { BLOCK_COLUMNS, decodeBlock, encodeBlock, type ExactReading } from "../../bridge/src/store/blocks.js"
import { parseArray } from "../../bridge/src/store/reading-columns.js"
import { readingRow } from "../../testkit/rows.js"

/** xorshift32: the same readings every run. */
function random(seed: number) {
  let x = seed
  return (n: number) => {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    return (x >>> 0) % n
  }
}

const MONTH = Date.UTC(2025, 4, 1)

function readings(seed: number, n: number): ExactReading[] {
  const r = random(seed)
  const maybe = (v: number) => (r(6) === 0 ? null : v)
  let water = r(1_000_000)
  let us = MONTH * 1000 + r(900) * 1000
  return Array.from({ length: n }, (_, i) => {
    us += 900_000_000 + (r(10) === 0 ? r(5_000_000) : 0) // jitter, to the microsecond
    const volume = maybe(r(40_000))
    water = r(50) === 0 ? r(100) : water + (volume ?? 0) + (r(8) === 0 ? r(300) : 0) // a reset, a miscount
    const avg = maybe(250_000 + r(100_000))
    return {
      ...readingRow("m", new Date(Math.floor(us / 1000)), {
        boot: 1 + Math.floor(i / 500),
        seq: 1 + Math.floor(i / 4),
        idx: i % 4,
        volumeMl: volume,
        reverseMl: maybe(r(3)),
        waterTotalMl: maybe(water),
        energyWh: maybe(r(500)),
        energyTotalWh: maybe(7_000_000 + i * 3),
        powerW: maybe(r(6_000) - 2_000),
        voltageDv: maybe(2_200 + r(200)),
        pressureAvgPa: avg,
        pressureMinPa: maybe((avg ?? 300_000) - r(4_000)),
        pressureMaxPa: maybe((avg ?? 300_000) + r(4_000)),
        timeSynced: r(20) !== 0,
        backfill: r(30) === 0,
        tsEstimated: r(90) === 0,
        afterReboot: i % 500 === 0,
      }),
      tsUs: us,
    }
  })
}

/** An array as PostgreSQL writes it as text: {1,-2,NULL}, {t,f}. */
const pgText = (a: unknown[] | null) =>
  a === null
    ? null
    : `{${a.map((v) => (v === null ? "NULL" : v === true ? "t" : v === false ? "f" : String(v))).join(",")}}`

describe("reading blocks decoded in Node", () => {
  test.each([1, 7, 2_976])("%i readings come back as they were coded", (n) => {
    const rows = readings(n, n)
    const [count, , , ...arrays] = encodeBlock(rows, MONTH)
    expect(count).toBe(n)
    const parsed = (arrays as (unknown[] | null)[]).map((a) => (a === null ? null : parseArray(pgText(a), n)))
    const decoded = decodeBlock(MONTH, n, parsed)
    for (const c of BLOCK_COLUMNS) {
      const want = rows.map((x) => (c.key === "ts" ? x.tsUs : x[c.key]))
      expect(decoded[c.key], c.key).toEqual(want)
    }
  })

  test("a channel never sent is one NULL array, decoded as n NULLs; malformed text is refused", () => {
    const rows = readings(3, 5).map((x) => ({ ...x, powerW: null }))
    const arrays = encodeBlock(rows, MONTH).slice(3) as (unknown[] | null)[]
    const at = BLOCK_COLUMNS.findIndex((c) => c.key === "powerW")
    expect(arrays[at]).toBeNull()
    expect(
      decodeBlock(
        MONTH,
        5,
        arrays.map((a) => (a ? parseArray(pgText(a), 5) : null)),
      ).powerW,
    ).toEqual(Array(5).fill(null))
    expect(parseArray("{}", 0)).toEqual([])
    expect(() => parseArray("[0:1]={1,2}", 2)).toThrow(/not a one-dimensional array/)
    expect(() => parseArray("{1,2}", 3)).toThrow(/2 elements where the block says 3/)
  })
})
