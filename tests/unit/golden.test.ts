// The bridge's side of the wire contract: proto/golden holds JSON + committed hex for each frame.
import { readFileSync, readdirSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, test } from "vitest"
import { decodeUplink } from "../../bridge/src/codec.js"
import type { FrameError } from "../../bridge/src/codec/frames.js"
import { citymeter } from "../../bridge/src/gen/citymeter.js"
import { expandReadings } from "../../bridge/src/ingest/index.js"
import { downlinkNonce, open } from "../../bridge/src/seal.js"
import type { DownKind, UpKind } from "../../bridge/src/topics.js"
import {
  decodeGolden,
  encodeGolden,
  goldenDir,
  plainGolden,
  readSealedGolden,
  sealGolden,
  type GoldenMessage,
} from "../../testkit/golden.js"

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
    for (const k of ["readings", "birth", "alarm", "death", "ack", "time", "config", "resend", "update"])
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

// issue 20: the first frame of a boot flags that counts before it may be missing
test("after_reboot decodes onto the frame, and the bridge puts it on the frame's first interval only", () => {
  const g = frames.find((f) => f.name === "readings-1x2-after-reboot")!
  const f = decodeUplink("readings", Buffer.from(g.hex, "hex"), 1795392000 + 3600)
  expect(f.kind === "readings" && f.afterReboot).toBe(true)
  if (f.kind !== "readings") return
  const rows = expandReadings("m1", f, null, new Date((1795392000 + 3600) * 1000))
  expect(rows.map((r) => r.afterReboot)).toEqual([true, false])
})

test("a delta-encoded voltage series decodes to the same intervals as the plain one", () => {
  const plain = frames.find((f) => f.name === "readings-4x3")!
  const delta = frames.find((f) => f.name === "readings-4x3-delta")!
  const at = 1795392000 + 3600
  expect(delta.hex.length).toBeLessThan(plain.hex.length)
  expect(decodeUplink("readings", Buffer.from(delta.hex, "hex"), at)).toEqual(
    decodeUplink("readings", Buffer.from(plain.hex, "hex"), at),
  )
})

describe("sealed golden frames", () => {
  const sealed = readSealedGolden()
  const nowS = 1795392000 + 3600
  const kindOf = (json: Record<string, unknown>) => Object.keys(json).find((k) => k !== "boot" && k !== "seq") as UpKind

  test("there is a sealed golden frame of every uplink kind and of ack, time, config and update", () => {
    const kinds = sealed.map((s) => kindOf(plainGolden(s.of).json))
    for (const k of ["readings", "birth", "alarm", "death", "ack", "time", "config", "update"])
      expect(kinds).toContain(k)
  })

  for (const s of sealed) {
    const { json, hex: plainHex } = plainGolden(s.of)
    const kind = kindOf(json)
    const key = Buffer.from(s.key, "hex")
    test(`${s.name}: sealing the plain golden frame under the test key gives the committed bytes`, () => {
      expect(sealGolden(s)).toBe(s.hex)
    })
    if (s.message === "Uplink") {
      test(`${s.name}: the bridge opens it to the plain frame; another key, another kind or a changed clear field fails`, () => {
        const ctx = { policy: "sealed" as const, keys: [key] }
        const opened = decodeUplink(kind, Buffer.from(s.hex, "hex"), nowS, ctx)
        const plain = decodeUplink(kind, Buffer.from(plainHex, "hex"), nowS)
        expect({ ...opened, link: 0, keyIndex: null }).toEqual(plain)
        expect(opened.keyIndex).toBe(0)
        const other = { policy: "sealed" as const, keys: [Buffer.alloc(32, 7)] }
        expect(() => decodeUplink(kind, Buffer.from(s.hex, "hex"), nowS, other)).toThrow(/tag does not verify/)
        const otherKind = kind === "alarm" ? "readings" : "alarm"
        expect(() => decodeUplink(otherKind, Buffer.from(s.hex, "hex"), nowS, ctx)).toThrow(/tag does not verify/)
        // the open plain frame is refused from a sealed meter
        expect(() => decodeUplink(kind, Buffer.from(plainHex, "hex"), nowS, ctx)).toThrow(/must be sealed/)
      })
    }
  }

  test("sealed downlinks open, under the test key and their clear nonce, to the plain golden bytes", () => {
    for (const s of sealed.filter((x) => x.message === "Downlink")) {
      const { json, hex } = plainGolden(s.of)
      const kind = Object.keys(json)[0] as DownKind
      const d = citymeter.v1.Downlink.decode(Buffer.from(s.hex, "hex"))
      expect(Buffer.from(d.nonce).toString("hex")).toBe(s.nonce)
      const nonce = downlinkNonce(kind, d.nonce)
      // the plaintext is the body message: the plain golden Downlink's one field, without its tag and length
      const plain = Buffer.from(hex, "hex")
      expect(open(Buffer.from(s.key, "hex"), nonce, d.sealed!)?.toString("hex"), s.name).toBe(
        plain.subarray(2).toString("hex"),
      )
      expect(open(Buffer.alloc(32), nonce, d.sealed!), s.name).toBeUndefined()
    }
  })

  test("2,000 bit flips of a sealed readings frame: none is accepted", () => {
    const s = sealed.find((x) => x.of === "readings-4x3")!
    const ctx = { policy: "sealed" as const, keys: [Buffer.from(s.key, "hex")] }
    const bytes = Buffer.from(s.hex, "hex")
    const reasons: Record<string, number> = {}
    for (let i = 0; i < 2000; i++) {
      const b = Buffer.from(bytes)
      const bit = i % (b.length * 8)
      b[bit >> 3] ^= 1 << (bit & 7)
      try {
        decodeUplink("readings", b, nowS, ctx)
        reasons.accepted = (reasons.accepted ?? 0) + 1
      } catch (e) {
        const code = (e as FrameError).code
        reasons[code] = (reasons[code] ?? 0) + 1
      }
    }
    expect(reasons.accepted ?? 0).toBe(0)
    expect(reasons.CM_ERR_SEAL).toBeGreaterThan(1500)
  })
})
