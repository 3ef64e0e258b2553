// The export of compacted periods writes its lines as bytes (export-blocks.ts LineWriter): each
// integer as String() writes it and each time as toISOString() does, which the rows' COPY writes
// too (tests/store/compaction-api.test.ts compares whole files).
import { describe, expect, test } from "vitest"
import { LineWriter } from "../../bridge/src/store/export-blocks.js"

const written = (f: (w: LineWriter) => void) => {
  const w = new LineWriter()
  w.start(1 << 12)
  f(w)
  return w.take().toString("latin1")
}

describe("LineWriter", () => {
  test("integers as String() writes them, to 2^53 − 1 either way", () => {
    const values = [
      0,
      1,
      -1,
      9,
      10,
      -10,
      99,
      100,
      123_456_789,
      -2_000_000,
      2 ** 31,
      -(2 ** 31),
      2 ** 53 - 1,
      -(2 ** 53 - 1),
      // past int32: the digits above the last nine, then the last nine with their zeros
      2 ** 31 + 1,
      1_000_000_000_000,
      1_735_689_600_000,
      10_000_000_001,
      -4_000_000_000_000_007,
    ]
    for (let i = 0; i < 2000; i++) values.push(Math.floor(Math.random() * 2 ** (31 + (i % 22))) * (i % 2 ? 1 : -1))
    for (const v of values)
      expect(
        written((w) => w.int(v)),
        String(v),
      ).toBe(String(v))
  })

  // epoch µs are exact doubles up to 2^53 (June 2255); a meter's times are uint32 seconds (to 2106)
  test("epoch-µs times as toISOString() writes their millisecond, across days and years", () => {
    const times = [
      0,
      999,
      1_000,
      86_399_999,
      86_400_000,
      Date.UTC(2024, 1, 29, 23, 59, 59, 999),
      Date.UTC(2255, 5, 5, 22, 59, 59, 999),
    ]
    for (const ms of times)
      for (const extra of [0, 1, 999])
        expect(
          written((w) => w.iso(ms * 1000 + extra)),
          `${ms} ms + ${extra} µs`,
        ).toBe(new Date(ms).toISOString())
    // a second time of the same day reuses the day's prefix, the next day makes its own
    expect(written((w) => (w.iso(5_000_000), w.iso(6_000_000), w.iso(86_400_000_000)))).toBe(
      "1970-01-01T00:00:05.000Z1970-01-01T00:00:06.000Z1970-01-02T00:00:00.000Z",
    )
  })
})
