// The balance CSV's cells (bridge/src/routes/dmas.ts balanceCell): the same text for the same
// number whatever the locale, never an exponent, at most 9 decimals, empty for null.
import { describe, expect, test } from "vitest"
import { balanceCell } from "../../bridge/src/routes/dmas.js"

describe("balance CSV cells", () => {
  test("integers as digits, shares with at most 9 decimals and no exponent", () => {
    expect(balanceCell(123456789012)).toBe("123456789012")
    expect(balanceCell(-4000)).toBe("-4000")
    expect(balanceCell(0)).toBe("0")
    expect(balanceCell(2 / 3)).toBe("0.666666667")
    expect(balanceCell(0.5)).toBe("0.5")
    expect(balanceCell(1e-7)).toBe("0.0000001")
    expect(balanceCell(-1e-12)).toBe("0")
    expect(balanceCell(0.9999999999)).toBe("1")
    expect(balanceCell(-0.25)).toBe("-0.25")
  })
  test("null is empty, booleans and times as text", () => {
    expect(balanceCell(null)).toBe("")
    expect(balanceCell(true)).toBe("true")
    expect(balanceCell(new Date("2035-05-01T00:00:00Z"))).toBe("2035-05-01T00:00:00.000Z")
  })
})
