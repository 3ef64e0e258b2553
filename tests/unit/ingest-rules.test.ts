// The per-frame rules (bridge/src/ingest/rules.ts) without a database: a meter's row and a frame
// in, a verdict out (error, rows, writes on the row, ack), and the row the next frame sees.
import { randomBytes } from "node:crypto"
import { describe, expect, test } from "vitest"
import {
  MAX_BOOT_JUMP,
  SEQ_SLACK,
  clockSkewMs,
  judgeFrame,
  newMeterRow,
  readArrival,
  type RuleOptions,
} from "../../bridge/src/ingest/rules.js"
import type { MeterRow } from "../../bridge/src/store/store.js"
import type { UpKind } from "../../bridge/src/topics.js"
import { birthFrame, readingsFrame, sealUplink, uplink } from "../../testkit/frames.js"

const at = new Date("2026-03-01T12:00:00Z")
const nowS = at.getTime() / 1000
const meterId = "m-1"

/** A meter born an hour ago at boot 3 (birth seq 10), 60 s intervals. */
function bornMeter(over: Partial<MeterRow> = {}): MeterRow {
  const bornAt = new Date(at.getTime() - 3600_000)
  return {
    ...newMeterRow(meterId, new Date(at.getTime() - 86400_000)),
    online: true,
    boot: 3,
    birthSeq: 10,
    bornAt,
    birthLink: 256,
    intervalS: 60,
    batch: 1,
    uptimeEpochMs: bornAt.getTime(),
    ...over,
  }
}

function judge(meter: MeterRow | undefined, kind: UpKind, payload: Uint8Array, opts?: RuleOptions) {
  const read = readArrival(kind, payload, at)
  return judgeFrame(meter, { meterId, kind, payload, at, read }, opts)
}

const readings = (seq: number, boot = 3) =>
  readingsFrame({ boot, seq, startS: nowS - 120, volumeMl: [4, 5], totalMl: 1000 })

describe("readings", () => {
  test("a frame in the meter's window: its rows, an ack, the meter seen; the row passed in is untouched", () => {
    const meter = bornMeter()
    const before = structuredClone(meter)
    const v = judge(meter, "readings", readings(11))
    expect(v.error).toBeUndefined()
    expect(v.rows?.map((r) => [r.idx, r.volumeMl, r.ts.getTime() / 1000])).toEqual([
      [0, 4, nowS - 120],
      [1, 5, nowS - 60],
    ])
    expect(v.ack).toEqual({ boot: 3, seq: 11 })
    expect(v.touch).toBe(true)
    expect(v.writes).toEqual([])
    expect(meter).toEqual(before)
  })

  test("the frame opened on arrival is the one judged: each payload is decoded once", () => {
    const read = readArrival("readings", readings(11), at)!
    const v = judgeFrame(bornMeter(), { meterId, kind: "readings", payload: new Uint8Array(), at, read })
    expect(v.frame).toBe(read.plainFrame)
  })

  test("a seq beyond what the boot can have reached, and a boot ahead of the last birth, are refused", () => {
    // born an hour ago at seq 10: at most 10 + 24 × 60 + slack
    const max = 10 + 24 * 60 + SEQ_SLACK
    expect(judge(bornMeter(), "readings", readings(max)).error).toBeUndefined()
    expect(judge(bornMeter(), "readings", readings(max + 1)).error?.code).toBe("CM_ERR_SEQ")
    expect(judge(bornMeter(), "readings", readings(1, 4)).error?.code).toBe("CM_ERR_BOOT")
    expect(judge(bornMeter(), "readings", readings(1, 3 - MAX_BOOT_JUMP - 1)).error?.code).toBe("CM_ERR_BOOT")
  })

  test("an INACTIVE meter is active again: a write on its row, and the next frame sees it active", () => {
    const v = judge(bornMeter({ inactive: true, online: false }), "readings", readings(11))
    expect(v.writes).toEqual([{ op: "markActive" }])
    expect(v.meter).toMatchObject({ inactive: false, online: true })
    expect(judge(v.meter, "readings", readings(12)).writes).toEqual([])
  })

  test("bad bytes are refused with the codec's reason", () => {
    expect(judge(bornMeter(), "readings", Buffer.from("ffffffffff", "hex")).error?.code).toBe("CM_ERR_DECODE")
    expect(judge(bornMeter(), "alarm", readings(11)).error?.code).toBe("CM_ERR_KIND_MISMATCH")
  })
})

describe("registry", () => {
  test("an unknown meter is refused in production, registered in the demo", () => {
    expect(judge(undefined, "readings", readings(1, 1)).error?.code).toBe("CM_ERR_UNKNOWN_METER")
    const v = judge(undefined, "readings", readings(1, 1), { autoRegister: true })
    expect(v.error).toBeUndefined()
    expect(v.touch).toBe(true)
    expect(v.meter).toMatchObject({ meterId, boot: null, firstSeen: at })
  })

  test("a topic that is not an uplink topic is refused before anything else", () => {
    const v = judgeFrame(undefined, { meterId: null, kind: undefined, payload: readings(1), at, read: undefined })
    expect(v.error?.code).toBe("CM_ERR_TOPIC")
  })
})

describe("births and deaths", () => {
  test("a birth moves the window: recorded on the row, which the next frame sees", () => {
    const v = judge(bornMeter(), "birth", birthFrame(4, { uptimeS: 30 }))
    expect(v.error).toBeUndefined()
    expect(v.writes.map((w) => w.op)).toEqual(["recordBirth"])
    expect(v.meter).toMatchObject({ boot: 4, birthSeq: 0, bornAt: at, online: true })
    expect(v.previousBoot).toBeUndefined()
    expect(judge(v.meter, "readings", readings(1, 4)).error).toBeUndefined()
  })

  test("a boot that went back starts a new life: counted, not refused", () => {
    const v = judge(bornMeter(), "birth", birthFrame(2))
    expect(v.error).toBeUndefined()
    expect(v.previousBoot).toBe(3)
  })

  test("deaths: without a boot, or of an earlier connection, are stale; a live one is written", () => {
    const death = (boot: number, link: number) => uplink({ boot, link, death: {} })
    expect(judge(bornMeter(), "death", new Uint8Array()).error?.code).toBe("CM_ERR_STALE_DEATH")
    expect(judge(bornMeter({ birthLink: 512 }), "death", death(3, 256)).error?.code).toBe("CM_ERR_STALE_DEATH")
    const v = judge(bornMeter(), "death", death(3, 256))
    expect(v.error).toBeUndefined()
    expect(v.writes).toEqual([{ op: "recordDeath", boot: 3 }])
    expect(v.meter?.online).toBe(false)
  })
})

describe("sealed meters", () => {
  const key = randomBytes(32)
  const nextKey = randomBytes(32)
  const sealedReadings = (k: Uint8Array, seq: number) =>
    sealUplink(k, {
      boot: 3,
      seq,
      readings: { startS: nowS - 60, timeSynced: true, intervalS: 60, water: { totalMl: 1000, volumeMl: [1] } },
    })

  test("an open frame from a sealed meter is refused, though it decoded on arrival", () => {
    const v = judge(bornMeter({ seal: { policy: "sealed", key, nextKey: null } }), "readings", readings(11))
    expect(v.error?.code).toBe("CM_ERR_UNSEALED")
  })

  test("a frame sealed with the meter's key is opened; downlinks are sealed with it", () => {
    const v = judge(bornMeter({ seal: { policy: "sealed", key, nextKey: null } }), "readings", sealedReadings(key, 11))
    expect(v.error).toBeUndefined()
    expect(v.frame?.keyIndex).toBe(0)
    expect(v.downlinkKey).toBe(key)
  })

  test("a frame sealed with the next key confirms the rotation, even when the frame itself is refused", () => {
    const meter = bornMeter({ seal: { policy: "sealed", key, nextKey } })
    const v = judge(meter, "readings", sealedReadings(nextKey, 1_000_000))
    expect(v.error?.code).toBe("CM_ERR_SEQ")
    expect(v.keyConfirmed).toBe(true)
    expect(v.writes).toEqual([{ op: "setSeal", seal: { key: nextKey, nextKey: null } }])
    expect(v.meter?.seal).toEqual({ policy: "sealed", key: nextKey, nextKey: null })
  })

  test("a frame sealed with an unknown key is refused", () => {
    const v = judge(
      bornMeter({ seal: { policy: "sealed", key, nextKey: null } }),
      "readings",
      sealedReadings(nextKey, 11),
    )
    expect(v.error?.code).toBe("CM_ERR_SEAL")
  })
})

test("a bug met while judging is returned, not thrown: parked with the id read from the clear envelope", () => {
  const broken = { ...bornMeter(), seal: undefined } as unknown as MeterRow
  const v = judge(broken, "readings", readings(11))
  expect(v.bug).toBeInstanceOf(TypeError)
  expect(v.error?.code).toBe("CM_ERR_STORE_REFUSED")
  expect(v.ack).toEqual({ boot: 3, seq: 11 })
})

test("a live synced frame far from its arrival has a skewed clock; a replayed one does not", () => {
  const frame = (startS: number, replayed = false) => {
    const read = readArrival("readings", readingsFrame({ seq: 1, startS, readings: { replayed } }), at)!
    return read.plainFrame as Extract<NonNullable<typeof read.plainFrame>, { kind: "readings" }>
  }
  expect(clockSkewMs(frame(nowS - 60), at)).toBeUndefined()
  expect(clockSkewMs(frame(nowS - 3600), at)).toBe(-3540_000)
  expect(clockSkewMs(frame(nowS - 3600, true), at)).toBeUndefined()
})
