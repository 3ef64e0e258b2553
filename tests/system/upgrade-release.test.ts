// Issue 26 item 7: an upgrade from the previous release's data, on both engines. The previous
// release (0.2.0, testkit/previous-release.ts: its tree from this repository's history, no network)
// runs its own bridge on a new data tier — a PGlite data directory, a PostgreSQL schema — and
// ingests meters' frames over MQTT (testkit/release-seed.ts); its API's answers are recorded. Then
// it stops, this bridge starts on the same data tier (the migrations run), and its API must give
// the same answers: every field the old answer had, with the same value. Fleet consumption, which
// 0.2.0 had no route for, must be the sum of the meters' consumption 0.2.0 answered.
import { createHash, randomBytes } from "node:crypto"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import pino from "pino"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { ServiceConfigError, startService } from "../../bridge/src/service.js"
import { MIGRATIONS } from "../../bridge/src/store/migrations.js"
import type { SqlStore } from "../../bridge/src/store/sql-store.js"
import { DEAD_LETTER_HEAD_BYTES } from "../../bridge/src/store/store.js"
import {
  PREVIOUS_RELEASE,
  pinnedVersions,
  previousReleaseTree,
  startPreviousBridge,
} from "../../testkit/previous-release.js"
import { SEED_ALARMS, SEED_METERS, SEED_READINGS, sendSeed } from "../../testkit/release-seed.js"
import { dropSchema, PG_URL } from "../helpers.js"

const FROM = "2026-10-31T00:00:00.000Z"
const TO = "2026-11-02T00:00:00.000Z"
const RANGE = `from=${FROM}&to=${TO}`
const BUCKETS = ["hour", "day", "month"] as const
const TOKEN = "upgrade-test-token"

type Json = Record<string, unknown>
const get = async (base: string, path: string): Promise<Json> => {
  const res = await fetch(base + path, { headers: { authorization: `Bearer ${TOKEN}` } })
  const body = (await res.json()) as Json
  if (res.status !== 200) throw new Error(`GET ${path}: ${res.status} ${JSON.stringify(body)}`)
  return body
}

/** The answers compared before and after the upgrade, by request. */
function requests(): string[] {
  const paths = ["/meters", "/alarms", "/alarms?open=true", "/readings/latest", "/dead-letters"]
  for (const id of SEED_METERS)
    paths.push(
      `/meters/${id}`,
      `/meters/${id}/readings?${RANGE}`,
      `/meters/${id}/alarms`,
      ...BUCKETS.map((b) => `/meters/${id}/consumption?bucket=${b}&${RANGE}`),
    )
  return paths
}

/** Waits until the previous release has stored the whole seed. */
async function seedStored(base: string) {
  const until = Date.now() + 30_000
  // a meter not registered yet answers 404
  const count = (path: string, key: string) =>
    get(base, path).then(
      (b) => (b[key] as unknown[]).length,
      () => 0,
    )
  for (;;) {
    const counts = await Promise.all(SEED_METERS.map((id) => count(`/meters/${id}/readings?${RANGE}`, "readings")))
    const alarms = await count("/alarms", "alarms")
    const dead = await count("/dead-letters", "deadLetters")
    const offline = (await get(base, "/meters/up-e1").catch((): Json => ({}))).online === false
    if (
      SEED_METERS.every((id, i) => counts[i] === SEED_READINGS[id]) &&
      alarms === SEED_ALARMS &&
      dead === 1 &&
      offline
    )
      return
    if (Date.now() > until)
      throw new Error(`seed not stored: readings ${counts}, alarms ${alarms}, dead letters ${dead}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

/**
 * An answer of the previous release as this release words it: the API changes since, each one the
 * CHANGELOG lists. Nothing else may differ.
 */
function asToday(answer: Json): Json {
  return JSON.parse(JSON.stringify(answer), (key, value: unknown) => {
    // "alarm types are `BURST`, not `ALARM_TYPE_BURST`" (the data tier keeps the proto names)
    if (key === "type" && typeof value === "string") return value.replace(/^ALARM_TYPE_/, "")
    // "bounded … dead letters": the payload's head (512 bytes), its size and SHA-256, not the payload
    if (value && typeof value === "object" && "payload" in value && typeof value.payload === "string") {
      const { payload, ...rest } = value as Json & { payload: string }
      const bytes = Buffer.from(payload, "hex")
      return {
        ...rest,
        payloadHead: bytes.subarray(0, DEAD_LETTER_HEAD_BYTES).toString("hex"),
        payloadBytes: bytes.length,
        payloadSha256: createHash("sha256").update(bytes).digest("hex"),
      }
    }
    return value
  }) as Json
}

interface ConsumptionRow {
  start: string
  waterMl: number | null
  energyWh: number | null
  readings: number
}

/** The fleet's consumption as the sum of each meter's, as the previous release answered them. */
function fleetFrom(before: Record<string, Json>, bucket: string) {
  const sums = new Map<string, { waterMl: number | null; energyWh: number | null; readings: number; meters: number }>()
  const add = (a: number | null, b: number | null) => (a === null && b === null ? null : (a ?? 0) + (b ?? 0))
  for (const id of SEED_METERS)
    for (const r of before[`/meters/${id}/consumption?bucket=${bucket}&${RANGE}`]!.consumption as ConsumptionRow[]) {
      const s = sums.get(r.start) ?? { waterMl: null, energyWh: null, readings: 0, meters: 0 }
      sums.set(r.start, {
        waterMl: add(s.waterMl, r.waterMl),
        energyWh: add(s.energyWh, r.energyWh),
        readings: s.readings + r.readings,
        meters: s.meters + 1,
      })
    }
  return [...sums].sort(([a], [b]) => a.localeCompare(b)).map(([start, s]) => ({ start, ...s }))
}

describe(`upgrade from ${PREVIOUS_RELEASE.version} (${PREVIOUS_RELEASE.commit.slice(0, 7)})`, () => {
  let tree: string
  const cleanup: (() => Promise<void>)[] = []
  beforeAll(() => {
    tree = previousReleaseTree()
  }, 60_000)
  afterAll(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {})
  })

  test("the previous release wrote with the engine version installed here", () => {
    // the PGlite data directory is the release's only if the same engine wrote it; a newer
    // PGlite here would need the release's own node_modules (its lockfile) to write the fixture
    const pglite = pinnedVersions(tree, "@electric-sql/pglite")
    expect(pglite.release).toBe(pglite.installed)
  })

  for (const engine of ["pglite", "postgres"] as const)
    test.concurrent(`${engine}: the same answers after the upgrade`, async () => {
      const schema = `t_${randomBytes(6).toString("hex")}`
      const dir = mkdtempSync(join(tmpdir(), "cm-upgrade-"))
      cleanup.push(async () => rmSync(dir, { recursive: true, force: true }))
      if (engine === "postgres") cleanup.push(() => dropSchema(schema))
      const databaseUrl = engine === "pglite" ? `pglite:${dir}` : PG_URL
      const old = await startPreviousBridge(tree, {
        DATABASE_URL: databaseUrl,
        ...(engine === "postgres" ? { DATABASE_SCHEMA: schema } : {}),
      })
      const before: Record<string, Json> = {}
      try {
        await sendSeed(tree, old.mqttUrl)
        await seedStored(old.httpUrl)
        for (const path of requests()) before[path] = await get(old.httpUrl, path)
      } finally {
        // 0.2.0 (run through the tsx CLI, which relays SIGINT) stops with 0; once, at load average
        // ≈20, it ended with 130 (cause not established). Its answers above were read first.
        expect([0, 130]).toContain(await old.stop())
      }

      const config = {
        databaseUrl,
        // PGlite not durable: syncing every file of the directory is not what this test is about
        storeOptions: engine === "postgres" ? { schema } : { durable: false },
        httpPort: 0,
        embeddedMqttPort: 0,
        demo: true,
        apiToken: TOKEN,
        inactivityCheckMs: 3_600_000,
        log: pino({ level: "silent" }),
      }
      const svc = await startService(config)
      try {
        const api = String(svc.httpUrl)
        const { rows } = await (svc.store as SqlStore).db.query<{ version: number; name: string }>(
          `SELECT version, name FROM schema_version ORDER BY version`,
        )
        expect(rows.map((r) => [Number(r.version), r.name])).toEqual(MIGRATIONS.map((s, i) => [i + 1, s.name]))
        for (const path of requests()) expect(await get(api, path), path).toMatchObject(asToday(before[path]!))
        // what 0.2.0 did not know, as the migrations fill it for its rows: open meters (no key), and
        // readings whose time the meter gave and whose counts are not known to be cut by a restart
        for (const id of SEED_METERS) {
          expect(await get(api, `/meters/${id}`)).toMatchObject({ sealPolicy: "open" })
          const { readings } = await get(api, `/meters/${id}/readings?${RANGE}`)
          expect(new Set((readings as Json[]).map((r) => `${r.tsEstimated} ${r.afterReboot}`))).toEqual(
            new Set(["false false"]),
          )
        }
        for (const bucket of BUCKETS) {
          const fleet = await get(api, `/consumption?bucket=${bucket}&${RANGE}`)
          expect(fleet.consumption, bucket).toMatchObject(fleetFrom(before, bucket))
        }
        // a release newer than this one migrated the tier: this bridge (a rollback without the
        // restore) is refused at once, as a setting that cannot work, instead of retried for ever
        await (svc.store as SqlStore).db.query(`INSERT INTO schema_version (version, name) VALUES ($1, 'newer')`, [
          MIGRATIONS.length + 1,
        ])
      } finally {
        await svc.stop()
      }
      const refused = await startService(config).catch((e: unknown) => e)
      expect(refused).toBeInstanceOf(ServiceConfigError)
      expect((refused as Error).message).toBe(
        `the data tier is at schema version ${MIGRATIONS.length + 1}; this bridge knows ${MIGRATIONS.length} steps (upgrade the bridge)`,
      )
    })
})
