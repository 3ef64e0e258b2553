// Upgrading a data tier created before schema versions (tests/fixtures/schema-before-versions.sql,
// with rows in it, written as that bridge wrote them) to the numbered steps of
// bridge/src/store/migrations.ts, on both engines; bridges starting together on one schema.
import { randomBytes } from "node:crypto"
import { mkdtempSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import pg from "pg"
import { afterAll, describe, expect, test } from "vitest"
import { openPglite, openPostgres } from "../../bridge/src/store/engines.js"
import { MIGRATIONS } from "../../bridge/src/store/migrations.js"
import type { SqlStore } from "../../bridge/src/store/sql-store.js"
import type { Store } from "../../bridge/src/store/store.js"
import { dropSchema, PG_URL } from "../helpers.js"
import { insertReadings, touchMeter } from "../../testkit/store-writes.js"

const BEFORE = readFileSync(new URL("../fixtures/schema-before-versions.sql", import.meta.url), "utf8")
const T0 = Date.parse("2026-03-01T00:00:00Z")
const iso = (minutes: number) => new Date(T0 + minutes * 60_000).toISOString()

/** Rows as the bridge before schema versions wrote them: two meters, eight and two readings. */
function legacyRows(withLatest: boolean): string[] {
  const readings: string[] = []
  const add = (m: string, i: number, total: number) =>
    readings.push(
      `('${m}', '${iso(i * 15)}', 900, 1, ${1 + (i >> 2)}, ${i & 3}, 10, 0, ${total}, 20, ${total * 2}, 100, 2300, 1, 2, 3, true, false)`,
    )
  for (let i = 0; i < 8; i++) add("u1", i, 1010 + i * 10)
  for (let i = 0; i < 2; i++) add("u2", i, 500 + i * 10)
  return [
    `INSERT INTO meters (meter_id, online, first_seen, last_seen, firmware, board, boot, interval_s, batch, channels)
     VALUES ('u1', true, '${iso(0)}', '${iso(120)}', 'fw 1', 'esp32', 1, 900, 4, '{WATER_VOLUME}'),
            ('u2', false, '${iso(0)}', '${iso(30)}', null, null, null, null, null, null)`,
    `INSERT INTO frames (meter_id, boot, seq, kind, received_at, sha256)
     VALUES ('u1', 1, 1, 'readings', '${iso(60)}', 'aa'), ('u1', 1, 2, 'readings', '${iso(120)}', 'bb'),
            ('u2', 1, 1, 'readings', '${iso(30)}', null), ('u1', 1, 3, 'alarm', '${iso(61)}', 'cc')`,
    `INSERT INTO readings VALUES ${readings.join(", ")}`,
    `INSERT INTO alarms VALUES ('u1', 1, 3, 'LEAK', true, '${iso(61)}', 7)`,
    `INSERT INTO dead_letters (received_at, topic, meter_id, reason, detail, payload, payload_bytes, payload_sha256)
     VALUES ('${iso(5)}', 'cm/v1/x/up/readings', 'x', 'decode', 'bad', '\\x0102', 2, 'ff')`,
    ...(withLatest
      ? [
          `INSERT INTO meter_latest SELECT DISTINCT ON (meter_id) * FROM readings
           ORDER BY meter_id, ts DESC, boot DESC, seq DESC, idx DESC`,
        ]
      : []),
  ]
}

/** What the upgraded store must show of legacyRows. */
async function expectUpgraded(store: Store) {
  const { rows } = await (store as SqlStore).db.query<{ version: number; name: string }>(
    `SELECT version, name FROM schema_version ORDER BY version`,
  )
  expect(rows.map((r) => [Number(r.version), r.name])).toEqual(MIGRATIONS.map((s, i) => [i + 1, s.name]))
  expect(await store.migrate()).toEqual([])

  const u1 = await store.getMeter("u1")
  expect(u1).toMatchObject({ online: true, firmware: "fw 1", boot: 1, intervalS: 900, channels: ["WATER_VOLUME"] })
  const readings = await store.readings("u1")
  expect(readings.map((r) => [r.ts.toISOString(), r.seq, r.idx, r.waterTotalMl])).toEqual(
    [...Array(8).keys()].map((i) => [iso(i * 15), 1 + (i >> 2), i & 3, 1010 + i * 10]),
  )
  expect(readings[0]).toMatchObject({
    volumeMl: 10,
    energyWh: 20,
    pressureMaxPa: 3,
    timeSynced: true,
    tsEstimated: false,
    afterReboot: false,
  })
  // the latest of each meter: kept, or filled by step 1 for a tier from before meter_latest had rows
  expect((await store.latest()).map((r) => [r.meterId, r.waterTotalMl])).toEqual([
    ["u1", 1080],
    ["u2", 510],
  ])
  const hours = await store.consumption("u1", { bucket: "hour" })
  expect(hours.map((h) => [h.start.toISOString(), h.waterMl, h.readings])).toEqual([
    [iso(0), 40, 4],
    [iso(60), 40, 4],
  ])
  // the district days are filled from the rollups by their step: the fleet's day, both meters
  const day = { bucket: "day" as const, from: new Date(T0), to: new Date(T0 + 86_400_000) }
  const fleet = await store.fleetConsumption(day)
  expect(fleet?.map((d) => [d.start.toISOString(), d.waterMl, d.readings, d.meters])).toEqual([[iso(0), 100, 10, 2]])
  expect(fleet).toEqual(await (store as SqlStore).fleetConsumptionByMeter(day))
  // and the district months by their step (issue 24): the fleet by month, the same from both paths
  const months = await store.fleetConsumption({ bucket: "month" })
  expect(months?.map((m) => [m.waterMl, m.meters])).toEqual([[100, 2]])
  expect(months).toEqual(await (store as SqlStore).fleetConsumptionByMeter({ bucket: "month" }))
  expect((await store.alarms({ meterId: "u1" })).map((a) => [a.type, a.active, a.value])).toEqual([["LEAK", true, 7]])
  expect((await store.deadLetters()).map((d) => [d.reason, d.payloadBytes])).toEqual([["decode", 2]])
  // the ledger still refuses the frames stored before the upgrade
  const again = await insertReadings(store, { meterId: "u1", boot: 1, seq: 1, sha256: "aa" }, [], new Date(T0))
  expect(again.kind).toBe("duplicate")
}

describe("upgrade from the schema before versions, with data", () => {
  const cleanup: (() => Promise<void>)[] = []
  afterAll(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {})
  })

  for (const withLatest of [true, false])
    test(`postgres${withLatest ? "" : ", meter_latest empty"}`, async () => {
      const schema = `t_${randomBytes(6).toString("hex")}`
      cleanup.push(() => dropSchema(schema))
      const c = new pg.Client({ connectionString: PG_URL })
      await c.connect()
      try {
        await c.query(`CREATE SCHEMA ${schema}; SET search_path TO ${schema}`)
        await c.query(BEFORE)
        for (const sql of legacyRows(withLatest)) await c.query(sql)
      } finally {
        await c.end()
      }
      const store = await openPostgres(PG_URL, { schema })
      cleanup.push(() => store.close())
      await expectUpgraded(store)
    })

  test("pglite", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cm-upgrade-"))
    const { PGlite } = await import("@electric-sql/pglite")
    const before = new PGlite(dir)
    await before.exec(BEFORE)
    for (const sql of legacyRows(true)) await before.exec(sql)
    await before.close()
    // not durable: syncing every file initdb wrote takes long and is not what this test is about
    const store = await openPglite(dir, { durable: false })
    cleanup.push(() => store.close())
    await expectUpgraded(store)
  })

  test("bridges starting together on one new PostgreSQL schema run each step once", async () => {
    const schema = `t_${randomBytes(6).toString("hex")}`
    cleanup.push(() => dropSchema(schema))
    const stores = await Promise.all([1, 2, 3, 4].map(() => openPostgres(PG_URL, { schema })))
    cleanup.push(async () => {
      for (const s of stores) await s.close()
    })
    const { rows } = await (stores[0] as SqlStore).db.query<{ version: number }>(
      `SELECT version FROM schema_version ORDER BY version`,
    )
    expect(rows.map((r) => Number(r.version))).toEqual(MIGRATIONS.map((_, i) => i + 1))
    await touchMeter(stores[3], "x", new Date(T0))
    expect((await stores[0].getMeter("x"))?.meterId).toBe("x")
  })
})
