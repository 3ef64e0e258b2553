// SensorThings $filter and $orderby → SQL without a database (bridge/src/sta/): fixed fragments,
// every property through its entity set's list, every literal a typed parameter, and anything else
// a 400 CM_ERR_BAD_QUERY that names it. The store suites run the same SQL on both engines
// (tests/store/request-edges.test.ts, tests/system/sensorthings-conformance.test.ts).
import { describe, expect, test } from "vitest"
import { SETS } from "../../bridge/src/sta/entities.js"
import { Params, Translator } from "../../bridge/src/sta/filter.js"

function filter(set: keyof typeof SETS, source: string) {
  const p = new Params()
  return { sql: new Translator(p).filter(SETS[set], "e", source), values: p.values }
}

describe("$filter → parameterised SQL", () => {
  test("a comparison reads the property's column and passes the literal as a typed parameter", () => {
    expect(filter("Things", "name eq 'meter-1'")).toEqual({ sql: "(e.meter_id = $1::text)", values: ["meter-1"] })
  })

  test("a string that could be SQL stays a parameter, its quote unescaped once", () => {
    const f = filter("Things", "name eq 'x'' OR 1=1 --'")
    expect(f.sql).toBe("(e.meter_id = $1::text)")
    expect(f.values).toEqual(["x' OR 1=1 --"])
  })

  test("and, or, not and parentheses keep their grouping; parameters are numbered in order", () => {
    expect(filter("Things", "not (name eq 'a' or name eq 'b')")).toEqual({
      sql: "(NOT (((e.meter_id = $1::text) OR (e.meter_id = $2::text))))",
      values: ["a", "b"],
    })
  })

  test("date-times become timestamps; numbers compare as float8", () => {
    const f = filter("Observations", "result gt 5 and phenomenonTime ge 2026-01-01T00:00:00+01:00")
    expect(f.sql).toBe("((e.result > $1::float8) AND (e.ts >= $2::timestamptz))")
    expect(f.values[0]).toBe(5)
    expect((f.values[1] as Date).toISOString()).toBe("2025-12-31T23:00:00.000Z")
  })

  test("a string compared with a number is read as the number it spells, in decimal only", () => {
    expect(filter("Observations", "result add 1 gt '3'")).toEqual({
      sql: "((e.result + $1::float8) > $2::float8)",
      values: [1, 3],
    })
    expect(() => filter("Observations", "result gt '0x10'")).toThrow(/'0x10' is not a number/)
  })

  test("functions map to fixed SQL", () => {
    expect(filter("Datastreams", "substringof('water', name)")).toEqual({
      sql: "((strpos(e.name, $1::text) > 0))",
      values: ["water"],
    })
  })
})

describe("$orderby → ORDER BY terms", () => {
  test('text sorts by code point (COLLATE "C") in the asked direction, ascending by default', () => {
    const p = new Params()
    expect(new Translator(p).orderBy(SETS.Things, "e", "name desc, id")).toEqual([
      '(e.meter_id) COLLATE "C" DESC',
      '(e.meter_id) COLLATE "C" ASC',
    ])
    expect(p.values).toEqual([])
  })
})

describe("what cannot be translated is a 400 naming it", () => {
  test.each([
    ["nosuch eq 1", /unknown property 'nosuch' of Things \(known: id, name/],
    ["name eq 1", /cannot compare text with number/],
    ["name eq 'x' and", /not a valid OData expression/],
    ["length(name) gt 2026-02-30T00:00:00Z", /'2026-02-30T00:00:00Z' is not a date-time on the calendar/],
    ["Datastreams/name eq 'x'", /goes through Datastreams, a collection/],
    ["name", /\$filter must be a condition/],
  ])("%s", (source, message) => {
    let caught: unknown
    try {
      filter("Things", source)
    } catch (e) {
      caught = e
    }
    expect(caught).toMatchObject({ code: "CM_ERR_BAD_QUERY", statusCode: 400 })
    expect((caught as Error).message).toMatch(message)
  })

  test("an expression nested deeper than the limit is refused before anything recurses into it", () => {
    const deep = `${"not (".repeat(200)}name eq 'a'${")".repeat(200)}`
    expect(() => filter("Things", deep)).toThrow(/nests deeper than 64 levels/)
  })
})
