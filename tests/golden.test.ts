// The bridge's side of the wire contract: proto/golden holds JSON + committed hex for each frame.
import { readFileSync, readdirSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, test } from "vitest"
import { decodeUplink } from "../bridge/src/codec.js"
import { decodeGolden, encodeGolden, goldenDir, type GoldenMessage } from "./golden-util.js"

const frames = readdirSync(goldenDir)
  .filter((f) => f.endsWith(".json"))
  .map((f) => {
    const name = f.slice(0, -5)
    const { message, json } = JSON.parse(readFileSync(join(goldenDir, f), "utf8")) as {
      message: GoldenMessage
      json: Record<string, unknown>
    }
    return { name, message, json, hex: readFileSync(join(goldenDir, `${name}.hex`), "utf8").trim() }
  })

describe("golden frames", () => {
  test("there is a golden frame for every uplink and downlink kind", () => {
    const kinds = frames.map((f) => Object.keys(f.json).find((k) => k !== "boot" && k !== "seq"))
    for (const k of ["readings", "birth", "alarm", "death", "ack", "time", "config", "resend"])
      expect(kinds).toContain(k)
  })

  for (const g of frames) {
    test(`${g.name}: decodes to its JSON`, () => {
      expect(decodeGolden(g.message, g.hex)).toEqual(g.json)
    })
    test(`${g.name}: protobufjs encodes the JSON to the golden bytes`, () => {
      expect(encodeGolden(g.message, g.json)).toBe(g.hex)
    })
  }

  test("the 4 x 3 readings golden frame passes the bridge's validation", () => {
    const g = frames.find((f) => f.name === "readings-4x3")!
    const f = decodeUplink("readings", Buffer.from(g.hex, "hex"), 1795392000 + 3600)
    expect(f.kind).toBe("readings")
    if (f.kind !== "readings") return
    expect(f.intervals).toHaveLength(4)
    expect(f.intervals[3]).toEqual({
      volumeMl: 48750,
      reverseMl: 0,
      energyWh: 251,
      powerW: 1004,
      voltageDv: 2290,
      pressureAvgPa: 301200,
      pressureMinPa: 292100,
      pressureMaxPa: 304200,
    })
  })
})
