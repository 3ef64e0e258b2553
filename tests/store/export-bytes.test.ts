// The export's byte rewriting on PostgreSQL (store/export-bytes.ts), without a database: COPY's
// lines of values become the export's CSV (\r\n ends) and NDJSON (keys in) lines, wherever the
// connection cuts its chunks, a line spanning several chunks included.
import { describe, expect, test } from "vitest"
import { READING_COLUMNS } from "../../bridge/src/store/columns.js"
import { crlf, JsonKeys } from "../../bridge/src/store/export-bytes.js"

// two readings as COPY writes them: a water meter's (energy null) and an electricity meter's
const VALUES = [
  [
    "m-1",
    "2026-01-01T00:00:00.000Z",
    900,
    1,
    7,
    0,
    5,
    0,
    1000,
    null,
    null,
    null,
    null,
    1,
    2,
    3,
    true,
    false,
    false,
    false,
  ],
  [
    "m_2",
    "2026-01-31T23:45:00.000Z",
    900,
    2,
    8,
    3,
    null,
    null,
    null,
    4,
    5000,
    -12,
    2301,
    null,
    null,
    null,
    false,
    true,
    true,
    true,
  ],
]
const copyText = VALUES.map((v) => v.map((x) => (x === null ? "" : String(x))).join(",") + "\n").join("")
const copyCsv = VALUES.map(
  (v) => v.map((x) => (x === null ? "null" : typeof x === "string" ? `"${x}"` : String(x))).join(",") + "\n",
).join("")
const rows = VALUES.map((v) => Object.fromEntries(READING_COLUMNS.map((c, i) => [c.key, v[i]])))

/** The text cut in pieces at every pair of positions (two cuts: three chunks, some empty). */
function* cuts(text: string) {
  const b = Buffer.from(text)
  for (let i = 0; i <= b.length; i += 3)
    for (let j = i; j <= b.length; j += 7) yield [b.subarray(0, i), b.subarray(i, j), b.subarray(j)]
}

describe("the export's bytes from COPY", () => {
  test("CSV: each \\n becomes \\r\\n, nothing else changes, wherever the chunks are cut", () => {
    const expected = VALUES.map((v) => v.map((x) => (x === null ? "" : String(x))).join(",") + "\r\n").join("")
    expect(expected.split("\r\n")[0]).toBe(
      "m-1,2026-01-01T00:00:00.000Z,900,1,7,0,5,0,1000,,,,,1,2,3,true,false,false,false",
    )
    for (const parts of cuts(copyText)) expect(Buffer.concat(parts.map(crlf)).toString()).toBe(expected)
  })

  test("NDJSON: the keys go in, as JSON.stringify writes the row, wherever the chunks are cut", () => {
    const expected = rows.map((r) => JSON.stringify(r) + "\n").join("")
    expect(expected).toContain(`"energyWh":null,`)
    expect(expected).toContain(`"powerW":-12,`)
    for (const parts of cuts(copyCsv)) {
      const keys = new JsonKeys()
      expect(Buffer.concat(parts.map((p) => keys.push(p))).toString()).toBe(expected)
    }
  })

  test("a chunk of many lines fits the NDJSON buffer it is given (no write past its end)", () => {
    const many = copyCsv.repeat(2000)
    const out = new JsonKeys().push(Buffer.from(many)).toString()
    expect(out.split("\n").length).toBe(4001)
    expect(JSON.parse(out.split("\n")[3999])).toEqual(rows[1])
  })
})
