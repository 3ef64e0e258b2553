// No frame can stop the city: arbitrary Uplink objects, with extreme values in every
// field, and arbitrary bytes, run through decode → validate → store on both engines. Invariant:
// each frame ends stored, duplicate, or dead-lettered with a reason; no error escapes; and the
// next valid frame is stored.
import { randomBytes } from "node:crypto"
import fc from "fast-check"
import pino from "pino"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { REJECT_REASONS } from "../../bridge/src/codec/frames.js"
import { Ingest, type IngestOutcome } from "../../bridge/src/ingest/index.js"
import { createMetrics } from "../../bridge/src/metrics.js"
import { openStore } from "../../bridge/src/store/engines.js"
import type { Store } from "../../bridge/src/store/store.js"
import { UP_KINDS, upTopic, type UpKind } from "../../bridge/src/topics.js"
import { PG_URL, dropSchema } from "../helpers.js"
import { readingsFrame, uplink } from "../../testkit/frames.js"

const OUTCOMES = new Set<string>(["stored", "duplicate", ...Object.keys(REJECT_REASONS)])
const nowS = Math.floor(Date.now() / 1000)

const U32 = [0, 1, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1]
const S32 = [-(2 ** 31), -1, 0, 1, 2 ** 31 - 1]
const U64 = ["0", "1", "9007199254740991", "9007199254740993", "9223372036854775807", "18446744073709551615"]
const S64 = ["-9223372036854775808", "-9007199254740993", "-1", "0", "9223372036854775807"]
/** Every value of a field's type, with its extremes drawn often. */
const u32 = fc.oneof(fc.constantFrom(...U32), fc.nat({ max: 2 ** 32 - 1 }), fc.nat({ max: 5000 }))
const s32 = fc.oneof(fc.constantFrom(...S32), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }))
const u64 = fc.oneof(fc.constantFrom(...U64), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map(String))
const s64 = fc.oneof(fc.constantFrom(...S64), fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(String))
const time = fc.oneof(u32, fc.integer({ min: nowS - 86400, max: nowS + 60 }))
const text = fc.oneof(
  fc.string({ maxLength: 80 }),
  fc.string({ unit: "binary", maxLength: 80 }),
  fc.constant("a\u0000b"),
)
const list = <T>(a: fc.Arbitrary<T>) => fc.array(a, { maxLength: 6 })

const readings = fc.record(
  {
    startS: time,
    timeSynced: fc.boolean(),
    intervalS: fc.oneof(u32, fc.constantFrom(60, 900)),
    water: fc.record({ totalMl: u64, volumeMl: list(u32), reverseMl: list(u32) }, { requiredKeys: [] }),
    electricity: fc.record(
      { totalWh: u64, energyWh: list(u32), powerW: list(s32), voltageDv: list(u32) },
      { requiredKeys: [] },
    ),
    pressure: fc.record({ avgPa: list(u32), belowAvgPa: list(u32), aboveAvgPa: list(u32) }, { requiredKeys: [] }),
    replayed: fc.boolean(),
  },
  { requiredKeys: [] },
)
const birth = fc.record(
  {
    firmware: text,
    board: text,
    intervalS: u32,
    batch: u32,
    waterTotalMl: u64,
    energyTotalWh: u64,
    queued: u32,
    dropped: u32,
    uptimeS: u32,
  },
  { requiredKeys: [] },
)
const alarm = fc.record(
  { type: fc.integer({ min: 0, max: 20 }), active: fc.boolean(), timeS: time, timeSynced: fc.boolean(), value: s64 },
  { requiredKeys: [] },
)
const body = fc.oneof(
  readings.map((readings) => ({ readings })),
  birth.map((birth) => ({ birth })),
  alarm.map((alarm) => ({ alarm })),
  fc.constant({ death: {} }),
)
const METERS = ["p-1", "p-2", "p-3"]
const BAD_TOPICS = ["citymeter/v1/p-1/up/bogus", "citymeter/v1/../up/readings", "citymeter/v1/p\u0000/up/readings"]
/** A topic: mostly the body's own kind (so frames reach the data tier), sometimes another, sometimes no topic at all. */
const topicFor = (kind: string) =>
  fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom(...METERS).map((m) => upTopic(m, kind as UpKind)) },
    {
      weight: 1,
      arbitrary: fc
        .record({ m: fc.constantFrom(...METERS), k: fc.constantFrom(...UP_KINDS) })
        .map(({ m, k }) => upTopic(m, k)),
    },
    { weight: 1, arbitrary: fc.constantFrom(...BAD_TOPICS) },
  )
/** [topic, payload] of an arbitrary Uplink object. */
const arbitraryUplink = fc
  .record({ boot: fc.oneof(u32, fc.integer({ min: 1, max: 3 })), seq: fc.oneof(u32, fc.nat({ max: 50 })), body })
  .chain(({ boot, seq, body }) =>
    topicFor(Object.keys(body)[0]).map((t) => [t, uplink({ boot, seq, ...body })] as const),
  )
const topic = fc
  .constantFrom(...METERS, ...METERS.map(() => ""))
  .chain((m) => (m ? fc.constantFrom(...UP_KINDS).map((k) => upTopic(m, k)) : fc.constantFrom(...BAD_TOPICS)))

const ENGINES = ["pglite", "postgres"] as const

describe.each(ENGINES)("arbitrary input through ingest on %s", (engine) => {
  let store: Store
  let ingest: Ingest
  const schema = `t_${randomBytes(6).toString("hex")}`
  const acks: string[] = []
  const seen = new Map<string, number>()
  let controlSeq = 0

  beforeAll(async () => {
    store = engine === "pglite" ? await openStore("pglite:memory") : await openStore(PG_URL, { schema })
    const metrics = createMetrics()
    const send = async (meterId: string, kind: string, payload: Uint8Array) => {
      if (kind === "ack") acks.push(`${meterId}:${Buffer.from(payload).toString("hex")}`)
    }
    ingest = new Ingest(store, send, metrics, pino({ level: "silent" }), { autoRegister: true })
  })
  afterAll(async () => {
    await store?.close()
    if (engine === "postgres") await dropSchema(schema)
  })

  const deadLetterCount = async () => (await store.deadLetters({ limit: 1 }))[0]?.id ?? 0

  /** A valid frame of a control meter: it must be stored after whatever came before. */
  const control = async () => {
    controlSeq++
    const payload = readingsFrame({ seq: controlSeq, startS: nowS - 120, totalMl: controlSeq })
    return ingest.handle(upTopic("control", "readings"), payload)
  }

  const check = async (t: string, payload: Uint8Array) => {
    const before = await deadLetterCount()
    let outcome: IngestOutcome
    try {
      outcome = await ingest.handle(t, payload)
    } catch (e) {
      throw new Error(`an error escaped ingest for ${t} ${Buffer.from(payload).toString("hex")}: ${e}`, {
        cause: e,
      })
    }
    expect(OUTCOMES.has(outcome), outcome).toBe(true)
    seen.set(outcome, (seen.get(outcome) ?? 0) + 1)
    const after = await deadLetterCount()
    // dead-lettered exactly when rejected
    expect(after > before, `${outcome} on ${t}: ${Buffer.from(payload).toString("hex")}`).toBe(
      outcome.startsWith("CM_ERR_"),
    )
    expect(await control()).toBe("stored")
  }

  test("arbitrary Uplink objects with extreme values: stored, duplicate or dead-lettered; the next frame is stored", async () => {
    await fc.assert(
      fc.asyncProperty(arbitraryUplink, ([t, payload]) => check(t, payload)),
      { numRuns: 400 },
    )
    // the generator reaches the data tier, not only the decoder
    console.log(`${engine}: outcomes of arbitrary Uplinks`, Object.fromEntries(seen))
    expect(seen.get("stored") ?? 0).toBeGreaterThan(40)
    // the control meter's frames were all stored, in full
    expect(await store.readings("control", { limit: 10_000 })).toHaveLength(controlSeq)
  })

  test("arbitrary bytes: stored, duplicate or dead-lettered; the next frame is stored", async () => {
    await fc.assert(fc.asyncProperty(topic, fc.uint8Array({ maxLength: 300 }), check), { numRuns: 300 })
  })

  test("each value the data tier cannot hold is dead-lettered with its own reason (regressions)", async () => {
    const m = "p-regress"
    const frame = (o: Record<string, unknown>) => uplink({ boot: 1, seq: 1, ...o })
    const series = (o: Record<string, unknown>) =>
      frame({ readings: { startS: nowS - 120, timeSynced: true, intervalS: 60, ...o } })
    const cases: [string, string, Uint8Array][] = [
      ["voltage_dv 2^31", "readings", series({ electricity: { energyWh: [1], voltageDv: [2 ** 31] } })],
      ["avg_pa 2^32-1", "readings", series({ pressure: { avgPa: [4294967295] } })],
      ["total_ml 2^63", "readings", series({ water: { totalMl: "9223372036854775808", volumeMl: [1] } })],
      ["total_wh 2^64-1", "readings", series({ electricity: { totalWh: "18446744073709551615", energyWh: [1] } })],
      ["birth interval_s 2^31", "birth", frame({ birth: { intervalS: 2 ** 31, batch: 1 } })],
      ["birth batch 2^31", "birth", frame({ birth: { intervalS: 60, batch: 2 ** 31 } })],
      ["NUL in birth firmware", "birth", frame({ birth: { firmware: "fw\u0000", intervalS: 60, batch: 1 } })],
      ["alarm value -2^63", "alarm", frame({ alarm: { type: 1, active: true, value: "-9223372036854775808" } })],
    ]
    for (const [what, kind, payload] of cases) {
      const outcome = await ingest.handle(upTopic(m, kind as "readings"), payload)
      expect(outcome, what).toBe("CM_ERR_FIELD")
      expect(await control(), what).toBe("stored")
    }
    // a topic with a NUL byte is dead-lettered (escaped), not a stalled insert
    expect(await ingest.handle("citymeter/v1/p\u0000x/up/readings", series({ water: { volumeMl: [1] } }))).toBe(
      "CM_ERR_TOPIC",
    )
    const [letter] = await store.deadLetters({ limit: 1 })
    expect(letter.topic).toBe("citymeter/v1/p\\x00x/up/readings")
  })
})
