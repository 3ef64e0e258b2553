// The contract every Store engine must pass (like aedes-persistence's abstract suite): run by
// tests/store/store.test.ts against PostgreSQL and PGlite.
import { createHash, randomBytes } from "node:crypto"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { MIGRATIONS } from "../bridge/src/store/migrations.js"
import type { SqlStore } from "../bridge/src/store/sql-store.js"
import { DEAD_LETTER_HEAD_BYTES, type ReadingRow, type Store } from "../bridge/src/store/store.js"
import { uid } from "./helpers.js"
import { dmaLossesContract } from "./store-contract-dma-losses.js"
import { dmaContract } from "./store-contract-dmas.js"
import { ledgerContract } from "./store-contract-ledger.js"
import { districtMonthContract } from "./store-contract-months.js"
import { releaseContract } from "./store-contract-releases.js"
import { rolloutContract } from "./store-contract-rollouts.js"
import {
  addDeadLetter,
  insertAlarm,
  insertReadings,
  markActive,
  raiseBridgeAlarm,
  recordBirth,
  touchMeter,
} from "../testkit/store-writes.js"

export interface StoreFixture {
  store: Store
  /** Releases what makeStore created (schema, database). */
  cleanup(): Promise<void>
}

const T0 = Date.parse("2026-03-01T00:00:00Z")
const at = (minutes: number) => new Date(T0 + minutes * 60_000)

/** One 15-minute interval reading; totals are the cumulative counters at the interval's end. */
export function reading(
  meterId: string,
  o: { minute: number; boot?: number; seq: number; idx?: number; volumeMl: number; waterTotalMl: number | null },
): ReadingRow {
  return {
    meterId,
    ts: at(o.minute),
    intervalS: 900,
    boot: o.boot ?? 1,
    seq: o.seq,
    idx: o.idx ?? 0,
    volumeMl: o.volumeMl,
    reverseMl: 0,
    waterTotalMl: o.waterTotalMl,
    energyWh: o.volumeMl * 2,
    energyTotalWh: o.waterTotalMl === null ? null : o.waterTotalMl * 2,
    powerW: 100,
    voltageDv: 2300,
    pressureMinPa: 1,
    pressureAvgPa: 2,
    pressureMaxPa: 3,
    timeSynced: true,
    backfill: false,
    tsEstimated: false,
    afterReboot: false,
  }
}

/** A frame: consecutive 15-minute intervals from `minute`, its water total ending at `endTotal`. */
interface FrameSpec {
  boot?: number
  seq: number
  minute: number
  volumes: number[]
  endTotal: number
}

/** The reading rows of a meter's frame. */
function frameRows(meterId: string, o: FrameSpec): ReadingRow[] {
  let total = o.endTotal - o.volumes.reduce((a, b) => a + b, 0)
  return o.volumes.map((v, idx) =>
    reading(meterId, {
      minute: o.minute + idx * 15,
      boot: o.boot,
      seq: o.seq,
      idx,
      volumeMl: v,
      waterTotalMl: (total += v),
    }),
  )
}

/** Stores a frame of consecutive 15-minute intervals starting at `minute`. */
async function frame(store: Store, meterId: string, o: FrameSpec & { sha256?: string }) {
  const key = { meterId, boot: o.boot ?? 1, seq: o.seq, sha256: o.sha256 }
  return (await insertReadings(store, key, frameRows(meterId, o), at(o.minute + o.volumes.length * 15))).kind
}

/** Stores frames of several meters in one ingest batch, as ingest writes them; each must be new. */
async function writeBatch(store: Store, frames: (FrameSpec & { meterId: string })[], seen: Date) {
  await store.ingestBatch(async (tx) => {
    const meters = [...new Set(frames.map((f) => f.meterId))]
    await tx.touchMeters(meters.map((meterId) => ({ meterId, firstAt: seen, lastAt: seen })))
    const claims = await tx.claimFrames(
      frames.map((f) => ({ meterId: f.meterId, boot: f.boot ?? 1, seq: f.seq, kind: "readings", at: seen })),
    )
    expect(claims.every((c) => c.kind === "stored")).toBe(true)
    await tx.writeReadings(frames.flatMap((f) => frameRows(f.meterId, f)))
  })
}

/**
 * `compacted`: the store compacts readings and ledger before each call (tests/store-compacted.ts);
 * the ledger's own compaction tests, which compact at chosen points, run on the plain stores only.
 */
export function describeStoreContract(
  name: string,
  makeStore: () => Promise<StoreFixture>,
  o: { compacted?: boolean } = {},
) {
  describe(`store contract: ${name}`, () => {
    let fx: StoreFixture
    let store: Store
    beforeAll(async () => {
      fx = await makeStore()
      store = fx.store
    })
    afterAll(async () => {
      await fx?.cleanup()
    })

    releaseContract(() => store)
    rolloutContract(() => store)
    districtMonthContract(() => store)
    if (!o.compacted) ledgerContract(() => store)
    dmaContract(() => store)
    dmaLossesContract(() => store)

    test("migrations: every step recorded once in schema_version, none run again, data kept", async () => {
      const m = uid("mig")
      await touchMeter(store, m, at(0))
      expect(await store.migrate()).toEqual([])
      expect(await store.migrate()).toEqual([])
      const versions = await (store as SqlStore).db.query<{ version: number; name: string }>(
        `SELECT version, name FROM schema_version ORDER BY version`,
      )
      expect(versions.rows.map((r) => [Number(r.version), r.name])).toEqual(MIGRATIONS.map((s, i) => [i + 1, s.name]))
      expect((await store.getMeter(m))?.meterId).toBe(m)
      const { rows } = await (store as SqlStore).db.query(
        `SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'`,
      )
      // readings become a hypertable exactly when TimescaleDB is available
      expect(store.features.hypertable).toBe(rows.length > 0)
    })

    test("meters: registered on first frame, birth config, online/offline, last seen only moves forward", async () => {
      const m = uid("m")
      expect(await store.getMeter(m)).toBeUndefined()
      const first = await touchMeter(store, m, at(10))
      expect(first).toMatchObject({ meterId: m, online: false, firmware: null, boot: null, inactive: false })
      expect(first.firstSeen.getTime()).toBe(at(10).getTime())
      await touchMeter(store, m, at(5)) // a late frame does not move last_seen back
      expect((await store.getMeter(m))!.lastSeen.getTime()).toBe(at(10).getTime())
      await recordBirth(
        store,
        m,
        { firmware: "fw 1", board: "esp32", boot: 3, seq: 17, intervalS: 900, batch: 4, uptimeEpochMs: 123 },
        at(20),
      )
      const born = (await store.getMeter(m))!
      expect(born).toMatchObject({ online: true, firmware: "fw 1", board: "esp32", boot: 3, intervalS: 900, batch: 4 })
      expect(born.uptimeEpochMs).toBe(123)
      expect(born.firstSeen.getTime()).toBe(at(10).getTime())
      expect(born.lastSeen.getTime()).toBe(at(20).getTime())
      expect(born.birthSeq).toBe(17)
      expect(born.bornAt!.getTime()).toBe(at(20).getTime())
      // a death of an earlier boot (or of none) leaves a re-born meter online
      expect(await store.recordDeath(m, 2, at(25))).toBe(false)
      expect((await store.getMeter(m))!.online).toBe(true)
      expect(await store.recordDeath(m, 3, at(30))).toBe(true)
      expect((await store.getMeter(m))!.online).toBe(false)
      const ids = (await store.listMeters()).map((x) => x.meterId)
      expect(ids).toContain(m)
      expect(ids).toEqual([...ids].sort())
    })

    test("readings by half-open time range, ordered, with a limit", async () => {
      const m = uid("r")
      await frame(store, m, { seq: 1, minute: 0, volumes: [1, 2, 3, 4], endTotal: 110 })
      await frame(store, m, { seq: 2, minute: 60, volumes: [5, 6], endTotal: 121 })
      const all = await store.readings(m)
      expect(all.map((r) => r.volumeMl)).toEqual([1, 2, 3, 4, 5, 6])
      expect(all.map((r) => r.waterTotalMl)).toEqual([101, 103, 106, 110, 115, 121])
      const mid = await store.readings(m, { from: at(15), to: at(60) })
      expect(mid.map((r) => r.volumeMl)).toEqual([2, 3, 4])
      expect((await store.readings(m, { limit: 2 })).map((r) => r.volumeMl)).toEqual([1, 2])
      expect(await store.readings(uid("none"))).toEqual([])
      expect(all[0]).toMatchObject({ meterId: m, intervalS: 900, boot: 1, seq: 1, idx: 0, timeSynced: true })
      // a placeholder time is stored as one (ts_estimated), in readings and the latest alike
      const e = uid("est")
      const placeholder = { ...reading(e, { minute: 0, seq: 1, volumeMl: 1, waterTotalMl: null }), timeSynced: false }
      await insertReadings(store, { meterId: e, boot: 1, seq: 1 }, [{ ...placeholder, tsEstimated: true }], at(1))
      expect((await store.readings(e)).map((r) => [r.timeSynced, r.tsEstimated])).toEqual([[false, true]])
      expect((await store.latest()).find((r) => r.meterId === e)?.tsEstimated).toBe(true)
      expect(all.every((r) => r.tsEstimated === false)).toBe(true)
    })

    test("a frame is stored exactly once, also when delivered concurrently", async () => {
      const m = uid("x")
      expect(await frame(store, m, { seq: 7, minute: 0, volumes: [1, 1], endTotal: 2 })).toBe("stored")
      expect(await frame(store, m, { seq: 7, minute: 0, volumes: [1, 1], endTotal: 2 })).toBe("duplicate")
      const results = await Promise.all(
        Array.from({ length: 6 }, () => frame(store, m, { seq: 8, minute: 30, volumes: [2], endTotal: 4 })),
      )
      expect(results.filter((r) => r === "stored")).toHaveLength(1)
      expect(await store.readings(m)).toHaveLength(3)
      // the same seq in another boot is another frame
      expect(await frame(store, m, { boot: 2, seq: 7, minute: 45, volumes: [3], endTotal: 7 })).toBe("stored")
      expect(await store.readings(m)).toHaveLength(4)
    })

    test("same frame id with the same content is a duplicate, with other content a conflict; nothing is written", async () => {
      const m = uid("h")
      const f = { seq: 1, minute: 0, volumes: [5], endTotal: 5 }
      expect(await frame(store, m, { ...f, sha256: "aa".repeat(32) })).toBe("stored")
      expect(await frame(store, m, { ...f, sha256: "aa".repeat(32) })).toBe("duplicate")
      const other = await insertReadings(
        store,
        { meterId: m, boot: 1, seq: 1, sha256: "bb".repeat(32) },
        [reading(m, { minute: 0, seq: 1, idx: 0, volumeMl: 999, waterTotalMl: 999 })],
        at(15),
      )
      // a compacted ledger keeps the hash's first 8 bytes (store/ledger-blocks.ts)
      expect(other).toEqual({ kind: "conflict", storedSha256: o.compacted ? "aa".repeat(8) : "aa".repeat(32) })
      expect((await store.readings(m)).map((r) => r.volumeMl)).toEqual([5])
      const alarm = { meterId: m, boot: 1, seq: 2, type: "ALARM_TYPE_LEAK", active: true, ts: at(1), value: 1 }
      expect((await insertAlarm(store, alarm, at(1), "cc".repeat(32))).kind).toBe("stored")
      expect((await insertAlarm(store, alarm, at(1), "cc".repeat(32))).kind).toBe("duplicate")
      expect((await insertAlarm(store, { ...alarm, active: false }, at(1), "dd".repeat(32))).kind).toBe("conflict")
      expect((await store.alarms({ meterId: m })).map((a) => a.active)).toEqual([true])
    })

    test("a bridge alarm is raised once while it is open", async () => {
      const m = uid("ba")
      await touchMeter(store, m, at(0))
      const raised = await Promise.all([1, 2, 3].map((v) => raiseBridgeAlarm(store, m, "FRAME_CONFLICT", v, at(v))))
      expect(raised.filter(Boolean)).toHaveLength(1)
      const open = await store.alarms({ meterId: m, open: true })
      expect(open.map((a) => [a.type, a.source])).toEqual([["FRAME_CONFLICT", "bridge"]])
    })

    test("the registry: registering is idempotent and makes a meter known, offline, unborn", async () => {
      const m = uid("reg")
      expect(await store.registerMeter(m, at(0))).toBe(true)
      expect(await store.registerMeter(m, at(1))).toBe(false)
      expect(await store.getMeter(m)).toMatchObject({ meterId: m, online: false, boot: null, birthSeq: null })
    })

    test("alarms: stored once, history in time order, open = raised without a later clear of its type", async () => {
      const m = uid("a")
      const ev = (seq: number, type: string, active: boolean, minute: number) =>
        insertAlarm(store, { meterId: m, boot: 1, seq, type, active, ts: at(minute), value: seq * 10 }, at(minute))
      expect((await ev(1, "ALARM_TYPE_LEAK", true, 1)).kind).toBe("stored")
      expect((await ev(1, "ALARM_TYPE_LEAK", true, 1)).kind).toBe("duplicate")
      await ev(2, "ALARM_TYPE_BURST", true, 2)
      await ev(3, "ALARM_TYPE_LEAK", false, 3)
      await ev(4, "ALARM_TYPE_TAMPER", true, 4)
      const history = await store.alarms({ meterId: m })
      expect(history.map((a) => [a.seq, a.type, a.active])).toEqual([
        [1, "ALARM_TYPE_LEAK", true],
        [2, "ALARM_TYPE_BURST", true],
        [3, "ALARM_TYPE_LEAK", false],
        [4, "ALARM_TYPE_TAMPER", true],
      ])
      expect(history[0]).toMatchObject({ meterId: m, boot: 1, value: 10, source: "meter" })
      const open = await store.alarms({ meterId: m, open: true })
      expect(open.map((a) => a.type)).toEqual(["ALARM_TYPE_BURST", "ALARM_TYPE_TAMPER"])
      expect((await store.alarms({ meterId: m, from: at(2), to: at(4) })).map((a) => a.seq)).toEqual([2, 3])
      // fleet-wide open alarms include this meter's
      const fleet = await store.alarms({ open: true })
      expect(fleet.filter((a) => a.meterId === m)).toHaveLength(2)
    })

    test("dead letters keep a bounded head with the size and hash of the whole, newest first, keyset pages", async () => {
      const m = uid("d")
      const big = randomBytes(DEAD_LETTER_HEAD_BYTES * 4)
      await addDeadLetter(
        store,
        { topic: "t/1", meterId: m, reason: "CM_ERR_DECODE", detail: "d1", payload: big },
        at(1),
      )
      // text from the network with a NUL and control characters is stored, escaped
      await addDeadLetter(
        store,
        {
          topic: "t/\u0000/2",
          meterId: null,
          reason: "CM_ERR_TOPIC",
          detail: "d\u00002",
          payload: new Uint8Array(),
          storedSha256: "ab",
        },
        at(2),
      )
      const [newest, older] = await store.deadLetters({ limit: 2 })
      expect(newest).toMatchObject({
        topic: "t/\\x00/2",
        meterId: null,
        reason: "CM_ERR_TOPIC",
        detail: "d\\x002",
        payloadBytes: 0,
        storedSha256: "ab",
      })
      expect(older).toMatchObject({
        topic: "t/1",
        meterId: m,
        reason: "CM_ERR_DECODE",
        detail: "d1",
        storedSha256: null,
      })
      expect(Buffer.from(older.payloadHead)).toEqual(big.subarray(0, DEAD_LETTER_HEAD_BYTES))
      expect(older.payloadBytes).toBe(big.length)
      expect(older.payloadSha256).toBe(createHash("sha256").update(big).digest("hex"))
      expect(older.receivedAt.getTime()).toBe(at(1).getTime())
      expect(await store.deadLetters({ limit: 1 })).toHaveLength(1)
      const page2 = await store.deadLetters({ beforeId: newest.id, limit: 1 })
      expect(page2.map((d) => d.id)).toEqual([older.id])
    })

    test("dead-letter retention deletes beyond the row count and the age", async () => {
      const letter = (i: number) => ({
        topic: `t/${i}`,
        meterId: null,
        reason: "CM_ERR_DECODE",
        detail: "",
        payload: new Uint8Array([i]),
      })
      for (let i = 0; i < 5; i++) await addDeadLetter(store, letter(i), at(1000 + i))
      // keep 3 rows: everything but the newest 3 goes
      await store.pruneDeadLetters({ maxRows: 3, maxAgeS: 1e9 }, at(1010))
      expect((await store.deadLetters({ limit: 100 })).map((d) => d.topic)).toEqual(["t/4", "t/3", "t/2"])
      // keep 1 day: rows older than a day before `now` go
      await store.pruneDeadLetters({ maxRows: 100, maxAgeS: 86400 }, new Date(at(1002).getTime() + 86400_000 + 1))
      expect((await store.deadLetters({ limit: 100 })).map((d) => d.topic)).toEqual(["t/4", "t/3"])
    })

    test("latest reading per meter: newest by time, a late backfill does not replace it, keyset pages", async () => {
      const prefix = uid("lt")
      const [a, b, c] = ["a", "b", "c"].map((s) => `${prefix}-${s}`)
      await frame(store, a, { seq: 1, minute: 0, volumes: [1, 2], endTotal: 3 })
      await frame(store, a, { seq: 3, minute: 60, volumes: [5], endTotal: 12 })
      await frame(store, a, { seq: 2, minute: 30, volumes: [3, 4], endTotal: 7 }) // backfill, older
      await frame(store, b, { seq: 1, minute: 0, volumes: [9], endTotal: 9 })
      await frame(store, c, { seq: 1, minute: 0, volumes: [1], endTotal: 1 })
      const mine = (await store.latest()).filter((r) => r.meterId.startsWith(prefix))
      expect(mine.map((r) => [r.meterId, r.seq, r.waterTotalMl])).toEqual([
        [a, 3, 12],
        [b, 1, 9],
        [c, 1, 1],
      ])
      expect(mine[0].ts.getTime()).toBe(at(60).getTime())
      const page = await store.latest({ after: a, limit: 1 })
      expect(page.map((r) => r.meterId)).toEqual([b])
      const json = JSON.parse((await store.latestJson({ after: a, limit: 2 })).json)
      expect(json.map((r: { meterId: string; ts: string }) => [r.meterId, r.ts])).toEqual([
        [b, at(0).toISOString()],
        [c, at(0).toISOString()],
      ])
    })

    test("consumption per bucket from totals: continuous across a reboot, a gap counted where data resumes", async () => {
      const m = uid("c")
      // 00:00-01:00 boot 1, totals 1000 → 1100
      await frame(store, m, { boot: 1, seq: 1, minute: 0, volumes: [10, 20, 30, 40], endTotal: 1100 })
      // reboot at 01:00: boot 2 starts a new seq, totals continue (firmware keeps them)
      await frame(store, m, { boot: 2, seq: 1, minute: 60, volumes: [5, 5, 5, 5], endTotal: 1120 })
      // gap: 02:00-03:00 missing (frames lost); data resumes 03:00 with total 1300: 180 ml were used
      // in the gap, 1300 - 1120 - 0 = 180 → all of it goes to the 03:00 bucket (interval volume 0)
      await frame(store, m, { boot: 2, seq: 3, minute: 180, volumes: [0, 7], endTotal: 1307 })
      // meter replaced at 04:00: total starts again at 50 → the interval volume counts
      await frame(store, m, { boot: 3, seq: 1, minute: 240, volumes: [50], endTotal: 50 })

      const hours = await store.consumption(m, { bucket: "hour" })
      expect(hours.map((h) => [h.start.toISOString(), h.waterMl, h.readings, h.gap])).toEqual([
        ["2026-03-01T00:00:00.000Z", 100, 4, false], // first reading: its interval volume
        ["2026-03-01T01:00:00.000Z", 20, 4, false], // across the reboot: total differences
        ["2026-03-01T03:00:00.000Z", 187, 2, true], // the gap's 180 ml where data resumes
        ["2026-03-01T04:00:00.000Z", 50, 1, true], // after 30 min without data the total went down: interval volume
      ])
      expect(hours.map((h) => h.energyWh)).toEqual([200, 40, 374, 100])
      // the sum telescopes to the totals (until the reset)
      expect(hours.slice(0, 3).reduce((s, h) => s + h.waterMl!, 0)).toBe(1307 - 1000)

      const quarters = await store.consumption(m, { bucket: "15min", from: at(60), to: at(195) })
      // from 01:00: the 00:45 reading is the predecessor, so 01:00 is a difference (5), not a volume
      expect(quarters.map((q) => q.waterMl)).toEqual([5, 5, 5, 5, 180])
      expect(quarters[4].start.toISOString()).toBe("2026-03-01T03:00:00.000Z")
      const days = await store.consumption(m, { bucket: "day" })
      expect(days.map((d) => [d.start.toISOString(), d.waterMl, d.readings])).toEqual([
        ["2026-03-01T00:00:00.000Z", 357, 11],
      ])
      const months = await store.consumption(m, { bucket: "month", to: at(240) })
      expect(months.map((d) => [d.start.toISOString(), d.waterMl])).toEqual([["2026-03-01T00:00:00.000Z", 307]])
      // a day in another time zone: Berlin's 1 March starts 2026-02-28T23:00Z
      const berlin = await store.consumption(m, { bucket: "day", tz: "Europe/Berlin" })
      expect(berlin.map((d) => d.start.toISOString())).toEqual(["2026-02-28T23:00:00.000Z"])
      expect(await store.consumption(uid("none"), { bucket: "day" })).toEqual([])
    })

    test("rollups give the consumption readings give, frames stored in any order; the API reads them, not readings", async () => {
      const m = uid("roll")
      const sql = store as SqlStore
      // 3 days of 15-minute readings in frames of 1-4 intervals, with a gap, a reboot and a reset
      const frames: { boot: number; seq: number; minute: number; volumes: number[]; endTotal: number }[] = []
      let total = 5000
      let seq = 0
      let rnd = 7
      let [replaced, lost] = [false, false]
      const next = () => (rnd = (rnd * 1103515245 + 12345) % 2 ** 31) / 2 ** 31
      for (let minute = 0; minute < 3 * 1440;) {
        const k = 1 + Math.floor(next() * 4)
        const volumes = [...Array(k)].map(() => Math.floor(next() * 50))
        if (minute >= 1500 && !replaced) [total, replaced] = [20, true] // meter replaced: the total starts again
        total += volumes.reduce((a, b) => a + b, 0)
        const boot = minute < 2000 ? 1 : 2
        if (!(minute >= 600 && minute < 700)) frames.push({ boot, seq: ++seq, minute, volumes, endTotal: total })
        minute += k * 15
        if (minute >= 900 && !lost) [total, lost] = [total + 333, true] // used while frames were lost
      }
      // shuffled: late backfills land before, after and inside stored hours and days
      const order = frames.map((f, i) => [next(), i] as const).sort((a, b) => a[0] - b[0])
      for (const [, i] of order.slice(0, 40)) await frame(store, m, frames[i])
      // the rest in batches of several frames, as ingest writes them
      const rest = order.slice(40).map(([, i]) => frames[i])
      for (let i = 0; i < rest.length; i += 25)
        await writeBatch(
          store,
          rest.slice(i, i + 25).map((f) => ({ ...f, meterId: m })),
          at(0),
        )
      const queries = [
        { bucket: "hour" as const },
        { bucket: "day" as const },
        { bucket: "month" as const },
        { bucket: "day" as const, tz: "Europe/Berlin" },
        { bucket: "hour" as const, from: at(13 * 60), to: at(40 * 60) },
        { bucket: "day" as const, from: at(1440), to: at(3 * 1440) },
        { bucket: "hour" as const, tz: "Asia/Kolkata" }, // a half-hour offset: from readings
      ]
      const fromRollups = []
      for (const q of queries) {
        const want = await sql.consumptionFromReadings(m, q)
        expect(want.length).toBeGreaterThan(0)
        const got = await store.consumption(m, q)
        expect(got).toEqual(want)
        fromRollups.push(got)
      }
      expect(fromRollups[1].map((d) => d.readings).reduce((a, b) => a + b, 0)).toBe(
        frames.reduce((a, f) => a + f.volumes.length, 0),
      )
      expect(fromRollups[0].some((h) => h.gap)).toBe(true)
      // with the readings gone (retention: rows and compacted blocks), days and months still come
      // from the daily rollup; hours from the hourly one, unless compaction dropped its rows
      // (compaction_state's horizon): then from the readings, of which there are none
      await sql.db.query(`DELETE FROM readings WHERE meter_id = $1`, [m])
      await sql.db.query(`DELETE FROM reading_blocks WHERE meter_id = $1`, [m])
      const { rows: h } = await sql.db.query<{ compacted: boolean }>(
        `SELECT horizon > '-infinity' AS compacted FROM compaction_state`,
      )
      for (let i = 0; i < 6; i++) {
        const hourly = [0, 3, 4].includes(i)
        expect(await store.consumption(m, queries[i])).toEqual(hourly && h[0].compacted ? [] : fromRollups[i])
      }
      expect(await store.consumption(m, queries[6])).toEqual([])
    })

    test("readings partitioned by month: a backfill into an old month stores; retention drops whole months", async () => {
      if (store.features.hypertable) return expect(store.features.partitioned).toBe(false)
      expect(store.features.partitioned).toBe(true)
      const sql = store as SqlStore
      const parts = async () =>
        (
          await sql.db.query<{ name: string }>(
            `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'readings'::regclass`,
          )
        ).rows.map((r) => r.name)
      // made ahead: this month and the next two
      const now = new Date()
      for (let i = 0; i < 3; i++) {
        const d = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + i, 1))
        expect(await parts()).toContain(
          `readings_p${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, "0")}`,
        )
      }
      const m = uid("old")
      const may = Date.parse("2019-05-31T23:30:00Z")
      const row = (ms: number, seq: number, total: number) => ({
        ...reading(m, { minute: 0, seq, volumeMl: 10, waterTotalMl: total }),
        ts: new Date(ms),
      })
      // a late backfill across a month edge into months without a partition: one frame, two months
      expect(
        (
          await insertReadings(
            store,
            { meterId: m, boot: 1, seq: 1 },
            [row(may, 1, 10), { ...row(may + 1_800_000, 1, 20), idx: 1 }],
            at(0),
          )
        ).kind,
      ).toBe("stored")
      expect(await parts()).toEqual(expect.arrayContaining(["readings_p201905", "readings_p201906"]))
      expect((await store.readings(m)).map((r) => r.waterTotalMl)).toEqual([10, 20])
      const days = await store.consumption(m, { bucket: "day" })
      // retention of 30 days on 2019-08-15: May and June end before 2019-07-16, so both go
      const done = await store.maintainReadings(new Date("2019-08-15T00:00:00Z"), 30)
      expect(done.dropped).toEqual(expect.arrayContaining(["201905", "201906"]))
      expect(done.dropped.every((k) => k < "201907")).toBe(true)
      expect(await store.readings(m)).toEqual([])
      expect(await parts()).not.toContain("readings_p201905")
      expect(await store.consumption(m, { bucket: "day" })).toEqual(days)
      // a later backfill into a dropped month makes its partition again
      expect(
        (await insertReadings(store, { meterId: m, boot: 1, seq: 2 }, [row(may - 900_000, 2, 5)], at(0))).kind,
      ).toBe("stored")
      expect((await store.readings(m)).map((r) => r.waterTotalMl)).toEqual([5])
      // without retention nothing is dropped
      expect((await store.maintainReadings(new Date("2030-01-01T00:00:00Z"))).dropped).toEqual([])
    })

    test("fleet consumption by day: the sum of every meter's, from the rollups", async () => {
      const prefix = uid("fleet")
      const Y = (Date.parse("2031-01-01T00:00:00Z") - T0) / 60_000 // minutes from T0 to 2031
      const meters = [0, 1, 2].map((i) => `${prefix}-${i}`)
      for (const [i, mm] of meters.entries()) {
        // day 0 and day 2 (a gap on day 1 for meter 0), 4 readings each
        for (const day of i === 0 ? [0, 2] : [0, 1, 2])
          await frame(store, mm, {
            seq: day + 1,
            minute: Y + day * 1440 + 600,
            volumes: [i + 1, i + 1, i + 1, i + 1],
            endTotal: 1000 * (i + 1) + (day + 1) * 100,
          })
      }
      const q = { bucket: "day" as const, from: at(Y), to: at(Y + 3 * 1440) }
      const fleet = (await store.fleetConsumption(q))!
      expect(fleet.map((d) => d.start.toISOString())).toEqual([
        "2031-01-01T00:00:00.000Z",
        "2031-01-02T00:00:00.000Z",
        "2031-01-03T00:00:00.000Z",
      ])
      const per = await Promise.all(meters.map((mm) => store.consumption(mm, q)))
      for (const d of fleet) {
        const same = per.flat().filter((c) => c.start.getTime() === d.start.getTime())
        expect(d.waterMl).toBe(same.reduce((s, c) => s + c.waterMl!, 0))
        expect(d.readings).toBe(same.reduce((s, c) => s + c.readings, 0))
        expect(d.meters).toBe(same.length)
      }
      expect(fleet.map((d) => d.meters)).toEqual([3, 2, 3])
      // day 3 of meter 0 carries its gap's consumption (100 ml over the missing day)
      expect(fleet[2].gap).toBe(true)
      expect(
        await store.fleetConsumption({ bucket: "day", from: new Date(Date.UTC(2031, 0, 1, 0, 30)) }),
      ).toBeUndefined()
    })

    test("district days: the fleet by day from one row per district and day equals every meter's rollups summed, under backfills and a move", async () => {
      const sql = store as SqlStore
      const Y = (Date.parse("2033-01-01T00:00:00Z") - T0) / 60_000 // minutes from T0 to 2033
      const [dA, dB] = [uid("north"), uid("south")]
      const meters = [0, 1, 2, 3].map((i) => uid(`dist${i}`))
      const home = [dA, dA, dB, null]
      for (const [i, mm] of meters.entries()) {
        const birth = { firmware: "f", board: "b", boot: 1, seq: 0, intervalS: 900, batch: 4, uptimeEpochMs: 0 }
        await recordBirth(store, mm, birth, at(Y))
        if (home[i])
          expect(await store.setLocation(mm, { lat: 1, lon: 2, address: null, district: home[i] })).toBe(true)
      }
      // 3 days of frames of 1-4 intervals per meter, a lost hour, a total reset on meter 1
      let rnd = 11
      const next = () => (rnd = (rnd * 1103515245 + 12345) % 2 ** 31) / 2 ** 31
      type F = FrameSpec & { meterId: string }
      const frames: F[] = []
      for (const [i, mm] of meters.entries()) {
        let total = 1000 * (i + 1)
        let seq = 0
        for (let minute = Y; minute < Y + 3 * 1440;) {
          const k = Math.min(1 + Math.floor(next() * 4), (Y + 3 * 1440 - minute) / 15) // within the 3 days
          const volumes = [...Array(k)].map(() => Math.floor(next() * 40))
          if (i === 1 && minute >= Y + 1500 && total > 500) total = 7
          total += volumes.reduce((a, b) => a + b, 0)
          if (!(i === 0 && minute >= Y + 600 && minute < Y + 660))
            frames.push({ meterId: mm, seq: ++seq, minute, volumes, endTotal: total })
          minute += volumes.length * 15
        }
      }
      const write = (chunk: F[]) => writeBatch(store, chunk, at(Y))
      // shuffled, in batches mixing meters: late backfills before, inside and after counted days
      const order = frames
        .map((f) => [next(), f] as const)
        .sort((a, b) => a[0] - b[0])
        .map(([, f]) => f)
      for (let i = 0; i < order.length; i += 30) await write(order.slice(i, i + 30))
      const q = { bucket: "day" as const, from: at(Y), to: at(Y + 4 * 1440) }
      const same = async () => {
        const fleet = (await store.fleetConsumption(q))!
        expect(fleet.length).toBeGreaterThan(0)
        expect(fleet).toEqual(await sql.fleetConsumptionByMeter(q))
        return fleet
      }
      const fleet = await same()
      expect(fleet.map((d) => d.meters)).toEqual([4, 4, 4])
      // a district's days are its meters' consumption summed
      const per = await Promise.all(meters.map((mm) => store.consumption(mm, q)))
      const sumOf = (idx: number[], day: Date) =>
        idx
          .flatMap((i) => per[i])
          .filter((c) => c.start.getTime() === day.getTime())
          .reduce((a, c) => a + c.waterMl!, 0)
      for (const [district, idx] of [
        [dA, [0, 1]],
        [dB, [2]],
        ["", [3]],
      ] as const) {
        const days = (await store.fleetConsumption({ ...q, district }))!
        expect(days.map((d) => d.waterMl)).toEqual(fleet.map((d) => sumOf([...idx], d.start)))
      }
      // meter 0 moves to B: its counted days stay in A; a late frame into day 1 too; day 4 is B's
      expect(await store.setLocation(meters[0], { lat: 1, lon: 2, address: null, district: dB })).toBe(true)
      const lost = frames.filter((f) => f.meterId === meters[0]).map((f) => f.seq)
      const endTotal = frames.filter((f) => f.meterId === meters[0]).at(-1)!.endTotal
      await write([
        {
          meterId: meters[0],
          seq: Math.max(...lost) + 1,
          minute: Y + 3 * 1440,
          volumes: [5, 5],
          endTotal: endTotal + 10,
        },
      ])
      await same()
      const a = (await store.fleetConsumption({ ...q, district: dA }))!
      const b = (await store.fleetConsumption({ ...q, district: dB }))!
      expect(a.map((d) => d.meters)).toEqual([2, 2, 2])
      expect(b.map((d) => d.meters)).toEqual([1, 1, 1, 1])
      expect(b[3].waterMl).toBe(10)
      // a district needs whole UTC days by day
      expect(await store.fleetConsumption({ ...q, bucket: "hour", district: dA })).toBeUndefined()
    })

    test("inactivity: marked offline with one INACTIVE alarm after 2 × interval × batch + slack; cleared once", async () => {
      const m = uid("i")
      const quiet = uid("q")
      await recordBirth(
        store,
        m,
        { firmware: "f", board: "b", boot: 1, seq: 0, intervalS: 60, batch: 2, uptimeEpochMs: 0 },
        at(0),
      )
      await recordBirth(
        store,
        quiet,
        { firmware: "f", board: "b", boot: 1, seq: 0, intervalS: 3600, batch: 4, uptimeEpochMs: 0 },
        at(0),
      )
      const online0 = await store.countOnline()
      // 2 × 60 × 2 = 240 s, + 30 s slack: not yet at 4.5 min, due after
      expect((await store.checkInactivity(at(4.4), 30)).filter((x) => x === m)).toEqual([])
      const marked = await Promise.all([store.checkInactivity(at(5), 30), store.checkInactivity(at(5), 30)])
      expect(marked.flat().filter((x) => x === m)).toEqual([m])
      expect(marked.flat()).not.toContain(quiet)
      expect(await store.getMeter(m)).toMatchObject({ online: false, inactive: true })
      expect(await store.countOnline()).toBe(online0 - 1)
      expect(await store.checkInactivity(at(10), 30)).not.toContain(m) // raised once
      const open = await store.alarms({ meterId: m, open: true })
      expect(open.map((a) => [a.type, a.source, a.active])).toEqual([["INACTIVE", "bridge", true]])
      expect(open[0].value).toBe(300) // seconds since its last frame

      const cleared = await Promise.all([markActive(store, m, at(11)), markActive(store, m, at(11))])
      expect(cleared.filter(Boolean)).toHaveLength(1)
      expect(await markActive(store, quiet, at(11))).toBe(false)
      expect(await store.getMeter(m)).toMatchObject({ online: true, inactive: false })
      expect(await store.alarms({ meterId: m, open: true })).toEqual([])
      expect((await store.alarms({ meterId: m })).map((a) => a.active)).toEqual([true, false])
    })

    test("fleet counts for /metrics: meters, inactive, frames dropped and meters with unstored writes by their last births", async () => {
      const [a, b, c] = [uid("fleet"), uid("fleet"), uid("fleet")]
      const before = await store.fleetCounts()
      const born = { firmware: "f", board: "b", boot: 1, seq: 0, intervalS: 60, batch: 1, uptimeEpochMs: 0 }
      await recordBirth(store, a, { ...born, dropped: 7, unstored: 3 }, at(0))
      await recordBirth(store, b, { ...born, dropped: 0, unstored: 0 }, at(0))
      await store.registerMeter(c, at(0))
      expect(await store.fleetCounts()).toEqual({
        meters: before.meters + 3,
        inactive: before.inactive,
        dropped: before.dropped + 7,
        unstored: before.unstored + 1,
      })
      // a new life's birth replaces the figures; a meter that missed its frames counts as inactive
      await recordBirth(store, a, { ...born, boot: 2, dropped: 2, unstored: 0 }, at(1))
      await recordBirth(store, b, { ...born, intervalS: 1 }, at(1))
      const quiet = await store.fleetCounts()
      const marked = await store.checkInactivity(at(1.5), 1)
      expect(marked).toContain(b)
      expect(marked).not.toContain(a)
      expect(await store.fleetCounts()).toEqual({
        meters: before.meters + 3,
        inactive: quiet.inactive + marked.length,
        dropped: before.dropped + 2,
        unstored: before.unstored,
      })
    })

    test("dashboard: queue figures from the birth, a meter's location, districts", async () => {
      const [a, b] = [uid("loc"), uid("loc")]
      const district = uid("district")
      await recordBirth(
        store,
        a,
        {
          firmware: "f",
          board: "b",
          boot: 1,
          seq: 0,
          intervalS: 900,
          batch: 1,
          uptimeEpochMs: 0,
          queued: 3,
          dropped: 7,
        },
        at(0),
      )
      await store.registerMeter(b, at(0))
      expect(await store.getMeter(a)).toMatchObject({ queued: 3, dropped: 7, location: null })
      const place = { lat: 48.2, lon: 16.37, address: "Ring 1", district }
      expect(await store.setLocation(a, place)).toBe(true)
      expect(await store.setLocation(b, { ...place, lat: -33.9, address: null })).toBe(true)
      expect(await store.setLocation(uid("nobody"), place)).toBe(false)
      expect((await store.getMeter(a))!.location).toEqual(place)
      expect((await store.listMeters()).find((m) => m.meterId === b)!.location).toEqual({
        ...place,
        lat: -33.9,
        address: null,
      })
      await insertReadings(
        store,
        { meterId: a, boot: 1, seq: 1 },
        [reading(a, { minute: 0, seq: 1, volumeMl: 250, waterTotalMl: 250 })],
        at(15),
      )
      await insertReadings(
        store,
        { meterId: a, boot: 1, seq: 2 },
        [reading(a, { minute: 60, seq: 2, volumeMl: 40, waterTotalMl: 290 })],
        at(75),
      )
      await insertAlarm(
        store,
        { meterId: b, boot: 1, seq: 1, type: "ALARM_TYPE_LEAK", active: true, ts: at(5), value: 1 },
        at(5),
      )
      const row = (await store.districts({ from: at(0), to: at(30) })).find((d) => d.district === district)
      expect(row).toEqual({ district, meters: 2, online: 1, openAlarms: 1, waterMl: 250, energyWh: 500 })
      const all = (await store.districts({})).find((d) => d.district === district)
      expect(all?.waterMl).toBe(290)
      expect(await store.setLocation(b, null)).toBe(true)
      expect((await store.getMeter(b))!.location).toBeNull()
      expect((await store.districts({})).find((d) => d.district === district)?.meters).toBe(1)
    })

    test("the registry holds a meter's WSSK link key apart from its sealing key; unknown meters have none", async () => {
      const m = uid("link")
      expect(await store.linkKey(m)).toBeUndefined()
      expect(await store.setLinkKey(m, new Uint8Array(32).fill(7))).toBe(false)
      await store.registerMeter(m, at(0), { policy: "sealed", key: new Uint8Array(32).fill(1) })
      expect(await store.linkKey(m)).toBeNull()
      const key = new Uint8Array(32).map((_, i) => i * 7 + 3)
      expect(await store.setLinkKey(m, key)).toBe(true)
      expect(await store.linkKey(m)).toEqual(key)
      expect((await store.getMeter(m))!.seal.key).toEqual(new Uint8Array(32).fill(1))
      expect(await store.setLinkKey(m, null)).toBe(true)
      expect(await store.linkKey(m)).toBeNull()
    })

    test("dashboard: an alarm edge is acknowledged once, with who, when and the note", async () => {
      const m = uid("ack")
      await insertAlarm(
        store,
        { meterId: m, boot: 2, seq: 5, type: "ALARM_TYPE_BURST", active: true, ts: at(1), value: 9 },
        at(1),
      )
      const key = { meterId: m, boot: 2, seq: 5 }
      expect(await store.ackAlarm({ ...key, seq: 6 }, { by: "x", at: at(2), note: "" })).toBeUndefined()
      const first = { by: "Ana", at: at(2), note: "crew on the way" }
      const [r1, r2] = await Promise.all([
        store.ackAlarm(key, first),
        store.ackAlarm(key, { by: "Bo", at: at(3), note: "late" }),
      ])
      expect([r1!.created, r2!.created].sort()).toEqual([false, true])
      const kept = r1!.created ? r1!.ack : r2!.ack
      expect((r1!.created ? r2 : r1)!.ack).toEqual(kept)
      expect(await store.ackAlarm(key, { by: "Cy", at: at(4), note: "" })).toEqual({ created: false, ack: kept })
      const [edge] = await store.alarms({ meterId: m })
      expect(edge.ack).toEqual(kept)
      expect((await store.alarms({ meterId: m, open: true }))[0].ack).toEqual(kept)
      // a bridge alarm (boot 0, seq = its id) is acknowledged the same way
      await raiseBridgeAlarm(store, m, "INACTIVE", 60, at(5))
      const bridge = (await store.alarms({ meterId: m })).find((a) => a.source === "bridge")!
      const r = await store.ackAlarm(bridge, { by: "Ana", at: at(6), note: "" })
      expect(r?.created).toBe(true)
      expect((await store.alarms({ meterId: m })).find((a) => a.source === "bridge")!.ack?.by).toBe("Ana")
    })

    test("dashboard: dead letters are counted", async () => {
      const before = await store.countDeadLetters()
      await addDeadLetter(
        store,
        {
          topic: "citymeter/v1/x/up/readings",
          meterId: null,
          reason: "CM_ERR_DECODE",
          detail: "d",
          payload: new Uint8Array([1]),
        },
        at(0),
      )
      expect(await store.countDeadLetters()).toBe(before + 1)
    })
  })
}
