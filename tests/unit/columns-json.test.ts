// The columns answer's writer gives JSON.stringify's bytes, whatever the arrays hold.
import { describe, expect, test } from "vitest"
import { columnsJson } from "../../bridge/src/store/columns-json.js"
import type { BlockValue } from "../../bridge/src/store/reading-columns-store.js"

const same = (meterId: string, columns: Record<string, BlockValue[]>, next: string | null) => {
  const count = Object.values(columns)[0]?.length ?? 0
  expect(columnsJson(meterId, count, columns, next).toString("utf8")).toBe(
    JSON.stringify({ meterId, count, columns, next }),
  )
}

describe("columnsJson", () => {
  test("readings' values: integers of every size and sign, booleans, nulls, empty columns", () => {
    const ints = [
      0,
      -0,
      1,
      -1,
      9,
      10,
      99,
      2 ** 31 - 1,
      2 ** 31,
      -(2 ** 31),
      -(2 ** 31) - 1,
      2 ** 53 - 1,
      -(2 ** 53 - 1),
    ]
    same("m-1", { ts: [1735689600000, 1735690500000], flags: [true, false], pressureMinPa: [null, 3] }, null)
    same("m-2", { a: ints, b: ints.map((v, i) => (i % 3 ? v : null)) }, "2025-01-01T00:00:00.000Z,1,2,3")
    same("m-3", { ts: [], boot: [] }, null)
    same("m-4", {}, null)
  })

  test("random columns (holey arrays as the store makes them)", () => {
    let seed = 7
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31
    for (let t = 0; t < 50; t++) {
      const n = Math.floor(rnd() * 300)
      const col = (): BlockValue[] => {
        const out = new Array<BlockValue>(n)
        for (let i = 0; i < n; i++) {
          const r = rnd()
          out[i] = r < 0.1 ? null : r < 0.2 ? r < 0.15 : Math.round((rnd() - 0.5) * 2 ** (1 + Math.floor(rnd() * 53)))
        }
        return out
      }
      same(`mt-${t}`, { ts: col(), volumeMl: col(), flags: col() }, t % 2 ? null : `c${t}`)
    }
  })

  test("what a reading never holds is still written as JSON writes it", () => {
    same('m-ü"\\', { x: [1.5, -0.25, 1e21, 2 ** 60, -1.2345678901234567e-308, NaN, Infinity] }, "n\u2028")
    same("m-5", { x: [undefined as unknown as BlockValue, 1] }, null)
  })
})
