// SQL parameters numbered as they are added (store/db.ts Params), the time zone only when used.
import { describe, expect, it } from "vitest"
import { Params } from "../../bridge/src/store/db.js"

describe("Params", () => {
  it("numbers placeholders in the order values are added", () => {
    const p = new Params()
    expect([p.add("m1"), p.add(null), p.add(3)]).toEqual(["$1", "$2", "$3"])
    expect(p.values).toEqual(["m1", null, 3])
  })

  it("adds a lazy value once, on first use, and never when unused", () => {
    const p = new Params()
    const tz = p.lazy("Europe/Berlin")
    p.lazy("UTC") // never called: never a parameter
    p.add("m1")
    expect([tz(), tz()]).toEqual(["$2", "$2"])
    expect(p.add("x")).toBe("$3")
    expect(p.values).toEqual(["m1", "Europe/Berlin", "x"])
  })
})
