// `citymeter backup` / `citymeter restore` as an operator runs them (the CLI as a process), on both
// engines: a data tier filled through the store's ingest batches (meters, readings, alarms), backed
// up (on PostgreSQL while ingest keeps writing), restored into an empty target, and the API of a
// bridge on the restored tier answers byte for byte as the source's did at backup time.
import { randomBytes } from "node:crypto"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, test } from "vitest"
import { startService, type Service } from "../../bridge/src/service.js"
import type { Store } from "../../bridge/src/store/store.js"
import { runCitymeter } from "../../testkit/process.js"
import { readingRow } from "../../testkit/rows.js"
import { insertAlarm, insertReadings, touchMeter } from "../../testkit/store-writes.js"
import { PG_URL, apiReadings, captureLog, dropSchema, uid } from "../helpers.js"

const T0 = Date.parse("2026-03-01T00:00:00Z")
const DAYS = 2
const METERS = ["bk-001", "bk-002", "bk-003"]
const work = mkdtempSync(join(tmpdir(), "cm-backup-"))
afterAll(() => rmSync(work, { recursive: true, force: true }))

const citymeter = (...args: string[]) => runCitymeter(args, { CITYMETER_API_TOKEN: "" })

/** A bridge's API on the data tier: MODE=api on PostgreSQL; PGlite belongs to one process, MODE=all. */
const api = (databaseUrl: string, schema?: string) =>
  startService({
    ...(schema
      ? { role: "api", storeOptions: { schema } }
      : { demo: true, embeddedMqttPort: 0, inactivityCheckMs: 3_600_000 }),
    databaseUrl,
    httpPort: 0,
    clientId: uid("api"),
    log: captureLog().log,
  })

/** DAYS of 15-minute readings per meter in frames of 4, cumulative totals; an alarm raised and cleared. */
async function fill(store: Store) {
  for (const [m, meterId] of METERS.entries()) {
    await touchMeter(store, meterId, new Date(T0))
    for (let f = 0; f < DAYS * 24; f++) {
      const rows = [0, 1, 2, 3].map((idx) => {
        const i = f * 4 + idx
        return readingRow(meterId, new Date(T0 + i * 900_000), {
          seq: f + 1,
          idx,
          volumeMl: 10 + m + (i % 7),
          waterTotalMl: 1000 + i * (10 + m) + ((i * (i % 7)) >> 1),
          energyWh: 2 + (i % 3),
          energyTotalWh: 500 + 3 * i,
        })
      })
      await insertReadings(store, { meterId, boot: 1, seq: f + 1 }, rows, new Date(T0 + (f + 1) * 3_600_000))
    }
    const ts = new Date(T0 + 5 * 3_600_000)
    const alarm = { meterId, boot: 1, type: "LEAK", value: 42 + m }
    await insertAlarm(store, { ...alarm, seq: 1000, active: true, ts }, ts)
    await insertAlarm(store, { ...alarm, seq: 1001, active: false, ts: new Date(ts.getTime() + 600_000) }, ts)
  }
}

/** The API's answers: GET /meters, each meter's readings (all pages), consumption by day, alarms. */
async function answers(svc: Service): Promise<Record<string, string>> {
  const get = async (url: string) => {
    const res = await svc.app.inject({ url })
    expect(res.statusCode, url).toBe(200)
    return res.body
  }
  const range = `from=${new Date(T0).toISOString()}&to=${new Date(T0 + DAYS * 86_400_000).toISOString()}`
  const out: Record<string, string> = { "/meters": await get("/meters"), "/alarms": await get("/alarms") }
  for (const m of METERS) {
    out[`${m}/readings`] = JSON.stringify(await apiReadings(svc, m))
    out[`${m}/consumption`] = await get(`/meters/${m}/consumption?bucket=day&${range}`)
    out[`${m}/alarms`] = await get(`/meters/${m}/alarms`)
  }
  // what is compared is the whole fill, not empty answers
  expect(JSON.parse(out[`${METERS[0]}/readings`])).toHaveLength(DAYS * 96)
  expect((JSON.parse(out["/alarms"]) as { alarms: unknown[] }).alarms).toHaveLength(2 * METERS.length)
  return out
}

/** GET /meters without the meters the concurrent writer adds (they are checked on their own). */
const withoutLive = (a: Record<string, string>) => {
  const meters = JSON.parse(a["/meters"]) as { meters: { meterId: string }[] }
  meters.meters = meters.meters.filter((m) => !m.meterId.startsWith("live-"))
  return { ...a, "/meters": JSON.stringify(meters) }
}

describe("citymeter backup / restore on PostgreSQL (pg_dump custom format)", () => {
  const schema = `t_${randomBytes(6).toString("hex")}`
  afterAll(() => dropSchema(schema))

  test("a backup taken while ingest writes restores to identical API answers, every batch whole", async () => {
    const src = await api(PG_URL, schema)
    await fill(src.store)
    const before = await answers(src)
    // ingest keeps writing during the backup: each batch one reading for live-a and one for live-b
    let writing = true
    let batches = 0
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        const ts = new Date(T0 + i * 60_000)
        await src.store.ingestBatch(async (tx) => {
          await tx.touchMeters(["live-a", "live-b"].map((meterId) => ({ meterId, firstAt: ts, lastAt: ts })))
          await tx.claimFrames(
            ["live-a", "live-b"].map((meterId) => ({ meterId, boot: 1, seq: i + 1, kind: "readings", at: ts })),
          )
          await tx.writeReadings(["live-a", "live-b"].map((m) => readingRow(m, ts, { seq: i + 1, volumeMl: i })))
        })
        batches++
      }
    })()
    await new Promise((r) => setTimeout(r, 200))
    const file = join(work, "pg.dump")
    const atStart = batches
    const b = await citymeter("backup", "--database", PG_URL, "--schema", schema, "--out", file)
    const during = batches - atStart
    writing = false
    await writer
    expect(b.stderr).toBe("")
    expect(b.code).toBe(0)
    expect(b.stdout).toMatch(
      new RegExp(
        `^backed up schema ${schema} \\(PostgreSQL, pg_dump custom format\\) to .*: [\\d.]+ MB in [\\d.]+ s\\n$`,
      ),
    )
    expect(during).toBeGreaterThan(0)
    await src.stop()

    // into an empty target: the schema dropped
    await dropSchema(schema)
    const r = await citymeter("restore", "--database", PG_URL, "--schema", schema, "--from", file)
    expect(r.stderr).toBe("")
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(
      new RegExp(`^restored schema ${schema} \\(PostgreSQL, \\d+ tables\\) from .* \\([\\d.]+ MB\\) in [\\d.]+ s\\n$`),
    )
    const dst = await api(PG_URL, schema)
    try {
      expect(withoutLive(await answers(dst))).toEqual(withoutLive(before))
      // one snapshot: live-a and live-b were written in the same batches, so they hold as many readings
      const [a, bb] = await Promise.all([apiReadings(dst, "live-a"), apiReadings(dst, "live-b")])
      expect(a.length).toBeGreaterThanOrEqual(atStart)
      expect(bb.length).toBe(a.length)
    } finally {
      await dst.stop()
    }
    // a non-empty target is refused (usage, exit 2) unless --force
    const again = await citymeter("restore", "--database", PG_URL, "--schema", schema, "--from", file)
    expect(again.code).toBe(2)
    expect(again.stderr).toMatch(/is not empty .*--force/)
    const forced = await citymeter("restore", "--database", PG_URL, "--schema", schema, "--from", file, "--force")
    expect(forced.code).toBe(0)
    expect(forced.stdout).toMatch(/, replacing \d+ tables\n$/)
  })
})

describe("citymeter backup / restore on PGlite (dumpDataDir / loadDataDir)", () => {
  test("a stopped bridge's directory restores into an empty one with identical API answers", async () => {
    const dir = join(work, "pglite-src")
    const src = await api(`pglite:${dir}`)
    let before: Record<string, string>
    const file = join(work, "pglite.tar.gz")
    try {
      await fill(src.store)
      before = await answers(src)
      // PGlite is one process: while the bridge has the directory open, backup refuses
      const open = await citymeter("backup", "--database", `pglite:${dir}`, "--out", file)
      expect(open.code).toBe(1)
      expect(open.stderr).toMatch(/is open .*stop the bridge/)
    } finally {
      await src.stop()
    }
    const b = await citymeter("backup", "--database", `pglite:${dir}`, "--out", file)
    expect(b.stderr).toBe("")
    expect(b.code).toBe(0)
    expect(b.stdout).toMatch(/^backed up PGlite .* to .*: [\d.]+ MB in [\d.]+ s\n$/)

    const target = join(work, "pglite-dst")
    const r = await citymeter("restore", "--database", `pglite:${target}`, "--from", file)
    expect(r.stderr).toBe("")
    expect(r.code).toBe(0)
    const dst = await api(`pglite:${target}`)
    try {
      expect(await answers(dst)).toEqual(before)
    } finally {
      await dst.stop()
    }
    const again = await citymeter("restore", "--database", `pglite:${target}`, "--from", file)
    expect(again.code).toBe(2)
    expect(again.stderr).toMatch(/is not empty.*--force/)
    // two bridges and three CLI processes each opening PGlite: 94 s alone at load 8, over the default
    // 120 s in CI beside the other suites
  }, 240_000)
})

describe("citymeter backup / restore: usage", () => {
  test("a missing option, an unknown engine or pglite:memory is a usage error (exit 2)", async () => {
    const cases: [string[], RegExp][] = [
      [["backup", "--database", "pglite:./x"], /required option '--out <file>'/],
      [["backup", "--database", "mysql://h/db", "--out", "x"], /--database must be postgres:\/\/… or pglite:<dir>/],
      [["backup", "--database", "pglite:memory", "--out", "x"], /pglite:memory has nothing to back up/],
      [["restore", "--database", PG_URL, "--schema", "Bad-Name", "--from", "x"], /invalid schema name/],
      [["restore", "--database", `pglite:${join(work, "none")}`, "--from", join(work, "absent")], /no such file/],
    ]
    for (const [args, message] of cases) {
      const r = await citymeter(...args)
      expect(r.code, args.join(" ")).toBe(2)
      expect(r.stderr, args.join(" ")).toMatch(message)
    }
  })
})
