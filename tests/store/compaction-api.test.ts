// The API's answers are byte-identical before and after compaction (issue 24): readings (rows and
// columns, the columns checked against the rows page by page), a
// meter's and the fleet's consumption in every bucket and time zone, districts, SensorThings
// $filter, the bulk export and the latest readings, on both engines. Then a late frame into a
// compacted month is answered at once (from rows) and after the next compaction (from its merged
// block) exactly as on a store that never compacted.
import { randomBytes } from "node:crypto"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { buildApp } from "../../bridge/src/api.js"
import { createMetrics } from "../../bridge/src/metrics.js"
import { openPglite, openPostgres } from "../../bridge/src/store/engines.js"
import { blockLines } from "../../bridge/src/store/export-blocks.js"
import { exactColumns, readingColumns } from "../../bridge/src/store/reading-columns.js"
import type { SqlStore } from "../../bridge/src/store/sql-store.js"
import type { ReadingRow, Store } from "../../bridge/src/store/store.js"
import { readingRow } from "../../testkit/rows.js"
import { insertReadings, touchMeter } from "../../testkit/store-writes.js"
import { dropSchema, PG_URL } from "../helpers.js"

const T0 = Date.parse("2026-01-01T00:00:00Z")
const STEP = 900_000
const METERS = ["ca-0", "ca-1", "ca-2", "ca-3"]
const SKIPPED = 234 // a frame of ca-0 on 10 January held back: the late frame

/** A frame of 4 readings: every channel varied, some absent, a reboot on day 33, clock jitter. */
function frame(m: number, k: number): ReadingRow[] {
  const boot = k < 33 * 24 ? 1 : 2
  return Array.from({ length: 4 }, (_, idx) => {
    const n = k * 4 + idx
    const water = 10_000 * m + Math.floor((n * (n % 7)) / 3)
    return readingRow(METERS[m], new Date(T0 + n * STEP + (n % 101 === 0 ? 777 : 0)), {
      boot,
      seq: boot === 1 ? k + 1 : k - 33 * 24 + 1,
      idx,
      volumeMl: n % 9 === 0 ? null : n % 7,
      reverseMl: n % 40 === 0 ? 2 : 0,
      waterTotalMl: n === 3000 ? 3 : water, // one register reset (1 February)
      energyWh: m === 3 ? null : n % 5,
      energyTotalWh: m === 3 ? null : 7000 + 2 * n,
      powerW: m === 3 ? null : -50 + (n % 300),
      voltageDv: m === 3 || n % 17 === 0 ? null : 2290 + (n % 21),
      pressureAvgPa: m === 1 ? null : 310_000 + ((n * 37) % 900),
      pressureMinPa: m === 1 ? null : 309_000 + ((n * 37) % 900),
      pressureMaxPa: m === 1 || n % 3 === 0 ? null : 311_000 + ((n * 37) % 900),
      timeSynced: n % 61 !== 0,
      backfill: k % 13 === 0,
      tsEstimated: n % 71 === 0,
      afterReboot: k === 33 * 24 && idx === 0,
    })
  })
}

// 36 days of hourly frames: two months to compact, and more than the 3,000 observations the $skip
// below skips (50 days took 115 s for both engines, under load)
const FRAMES = 36 * 24

async function seed(store: Store, skip: boolean) {
  for (const [i, m] of METERS.entries()) {
    await touchMeter(store, m, new Date(T0))
    await store.setLocation(m, { lat: 52, lon: 13, address: null, district: `d${i % 2}` })
  }
  // a day of frames per ingest batch, as a bridge batches them
  for (let k0 = 0; k0 < FRAMES; k0 += 24) {
    const frames: ReadingRow[][] = []
    for (let k = k0; k < k0 + 24; k++)
      for (let m = 0; m < METERS.length; m++) if (!(skip && m === 0 && k === SKIPPED)) frames.push(frame(m, k))
    await store.ingestBatch(async (tx) => {
      const claims = await tx.claimFrames(
        frames.map((f) => ({
          meterId: f[0].meterId,
          boot: f[0].boot,
          seq: f[0].seq,
          kind: "readings" as const,
          at: f[0].ts,
        })),
      )
      expect(claims.every((c) => c.kind === "stored")).toBe(true)
      await tx.writeReadings(frames.flat())
    })
  }
}

const q = (s: string) => encodeURI(s)
const URLS = [
  "/meters/ca-0/readings?from=2026-01-01T00:00:00Z&to=2026-04-01T00:00:00Z&limit=10000",
  "/meters/ca-0/readings?from=2026-02-03T06:00:00Z&to=2026-02-03T12:07:00Z",
  "/meters/ca-1/readings?from=2026-01-31T23:00:00Z&to=2026-02-01T01:00:00Z",
  "/meters/ca-3/readings",
  "/meters/ca-0/readings/columns?from=2026-01-01T00:00:00Z&to=2026-04-01T00:00:00Z&limit=10000",
  "/meters/ca-0/readings/columns?from=2026-02-03T06:00:00Z&to=2026-02-03T12:07:00Z",
  "/meters/ca-1/readings/columns?from=2026-01-31T23:00:00Z&to=2026-02-01T01:00:00Z",
  "/meters/ca-3/readings/columns",
  ...["15min", "hour", "day", "month"].flatMap((b) => [
    `/meters/ca-0/consumption?bucket=${b}&from=2026-01-30T00:00:00Z&to=2026-02-02T00:00:00Z`,
    `/meters/ca-2/consumption?bucket=${b}&from=2026-01-01T00:00:00Z&to=2026-04-01T00:00:00Z`,
  ]),
  "/meters/ca-0/consumption?bucket=day&tz=Europe/Berlin&from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",
  "/meters/ca-0/consumption?bucket=hour&tz=Asia/Kolkata&from=2026-02-02T00:00:00Z&to=2026-02-04T00:00:00Z",
  "/meters/ca-1/consumption?bucket=month",
  "/consumption?bucket=day&from=2026-01-01T00:00:00Z&to=2026-04-01T00:00:00Z",
  "/consumption?bucket=month&from=2026-01-01T00:00:00Z&to=2026-04-01T00:00:00Z",
  "/consumption?bucket=hour&from=2026-01-31T00:00:00Z&to=2026-02-01T12:00:00Z",
  "/consumption?bucket=day&district=d1&from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",
  "/districts?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z",
  q(
    "/sta/v1.1/Datastreams('ca-0:water')/Observations?$filter=phenomenonTime ge 2026-01-01T00:00:00Z and phenomenonTime lt 2027-01-01T00:00:00Z and result gt 3&$top=50&$count=true",
  ),
  q("/sta/v1.1/Datastreams('ca-2:pressure')/Observations?$orderby=phenomenonTime desc&$top=20&$skip=3000"),
  q("/sta/v1.1/Things('ca-1')/Datastreams?$expand=Observations($top=3;$orderby=phenomenonTime)"),
  "/export/readings/2026-01.csv",
  "/export/readings/2026-02.ndjson",
  "/export/readings/2026-01-31.csv",
  "/readings/latest",
]

describe.each(["postgres", "pglite"] as const)("API answers before and after compaction on %s", (engine) => {
  const stores: Store[] = []
  const schemas: string[] = []
  const open = async () => {
    const schema = `t_${randomBytes(6).toString("hex")}`
    schemas.push(schema)
    const s = engine === "postgres" ? await openPostgres(PG_URL, { schema }) : await openPglite(undefined)
    stores.push(s)
    return s
  }
  let store: Store
  let plain: Store
  beforeAll(async () => {
    ;[store, plain] = [await open(), await open()]
    await Promise.all([seed(store, true), seed(plain, false)])
  }, 240_000)
  afterAll(async () => {
    for (const s of stores) await s.close()
    if (engine === "postgres") for (const s of schemas) await dropSchema(s)
  })

  const answers = async (s: Store) => {
    const app = buildApp({ store: s, metrics: createMetrics() })
    try {
      const out: Record<string, string> = {}
      for (const url of URLS) {
        const r = await app.inject({ url })
        expect(r.statusCode, `${url}: ${r.body.slice(0, 300)}`).toBe(200)
        out[url] = r.body
      }
      return out
    } finally {
      await app.close()
    }
  }

  /**
   * Every meter's readings walked in pages of 997, as rows and as columns: the same pages (the
   * same `next`), and each page's columns the rows' fields transposed (ts as epoch ms).
   */
  const columnsAreRows = async (s: Store, label: string) => {
    const app = buildApp({ store: s, metrics: createMetrics() })
    try {
      for (const m of METERS) {
        let after = ""
        let pages = 0
        for (;;) {
          const page = `limit=997${after ? `&after=${after}` : ""}`
          const rows = (await app.inject({ url: `/meters/${m}/readings?${page}` })).json<{
            readings: Record<string, unknown>[]
            next: string | null
          }>()
          const cols = (await app.inject({ url: `/meters/${m}/readings/columns?${page}` })).json<{
            count: number
            columns: Record<string, unknown[]>
            next: string | null
          }>()
          expect(cols.next, `${label}: ${m} page ${pages}`).toBe(rows.next)
          expect(cols.count).toBe(rows.readings.length)
          const transposed = Object.fromEntries(
            Object.keys(rows.readings[0]).map((k) => [
              k,
              rows.readings.map((r) => (k === "ts" ? Date.parse(r.ts as string) : r[k])),
            ]),
          )
          expect(cols.columns, `${label}: ${m} page ${pages}`).toEqual(transposed)
          pages++
          if (!rows.next) break
          after = rows.next
        }
        expect(pages, m).toBe(4) // 36 days of 96 readings: 3,456 (3,452 for ca-0 without its late frame)
        // by 15 minutes from the columns (quarter-hours.ts) as from the readings in SQL: from the
        // start, and from mid-bucket times whose predecessor is a jittered reading of another month
        // (ca-0: water and energy, a late frame, a reboot; ca-3: no energy at all)
        for (const [from, to] of m !== "ca-0" && m !== "ca-3"
          ? []
          : [
              [undefined, undefined],
              ["2026-01-30T00:07:00Z", "2026-02-02T00:00:00Z"],
              ["2026-02-01T00:00:00.5Z", "2026-02-03T12:07:00Z"],
            ]) {
          const range = {
            bucket: "15min" as const,
            from: from ? new Date(from) : undefined,
            to: to ? new Date(to) : undefined,
          }
          expect(await s.consumption(m, range), `${label}: ${m} by 15 minutes from ${from}`).toEqual(
            await (s as SqlStore).consumptionFromReadings(m, range),
          )
        }
        // the blocks read in two statements side by side (a meter's year is; 36 days are not)
        const split = await readingColumns((s as SqlStore).db, m, { limit: 5000 }, { splitAt: 1 })
        expect(split, `${label}: ${m} split`).toEqual(await s.readingColumns(m, { limit: 5000 }))
        // a cap the blocks pass: their count and no arrays read (the 15-minute path's memory bound);
        // a cap they do not: the columns, as without one
        const db = (s as SqlStore).db
        const blocks = (
          await db.query<{ n: number }>(`SELECT n FROM reading_blocks WHERE meter_id = $1 ORDER BY month`, [m])
        ).rows
        // the first block may begin before the range: counted are the blocks after it
        const counted = blocks.slice(1).reduce((n, b) => n + b.n, 0)
        if (counted) {
          const over = await exactColumns(db, m, { limit: 5000 }, { cap: counted - 1 })
          expect(over, `${label}: ${m} over its cap`).toEqual({ count: counted, columns: {} })
        }
        expect(await exactColumns(db, m, { limit: 5000 }, { cap: 5000 })).toEqual(
          await exactColumns(db, m, { limit: 5000 }),
        )
      }
    } finally {
      await app.close()
    }
  }

  /**
   * The export of a compacted month, a batch of one block or meter at a time (the next batch read
   * while this one is written): the whole file's bytes; and a reader that stops after its first
   * lines, with the next batch still in flight, gives its connection back (six stops, then the file
   * again, on a pool of four).
   */
  const blockExportStops = async (s: Store) => {
    const db = (s as SqlStore).db.reads ?? (s as SqlStore).db
    const [from, to] = [new Date("2026-01-01T00:00:00Z"), new Date("2026-02-01T00:00:00Z")]
    const text = async (lines: AsyncIterable<string | Uint8Array>) => {
      const out: Buffer[] = []
      for await (const b of lines) out.push(Buffer.from(b))
      return Buffer.concat(out).toString()
    }
    const whole = await text(s.exportLines(from, to, "csv"))
    expect(whole.split("\r\n").length).toBeGreaterThan(METERS.length * 2900)
    const small = { fetchRows: 1, keysetMeters: 1 }
    expect(await text(blockLines(db, from, to, "csv", small))).toBe(whole)
    for (let i = 0; i < 6; i++) {
      const lines = blockLines(db, from, to, "ndjson", small)
      expect((await lines.next()).value.length).toBeGreaterThan(0)
      await lines.return(undefined)
    }
    expect(await text(s.exportLines(from, to, "csv"))).toBe(whole)
  }

  test("byte-identical after compacting January and February, and after a late frame into January", async () => {
    const before = await answers(store)
    await columnsAreRows(store, "rows")
    const done = await store.compactReadings(new Date("2026-03-05T00:00:00Z"))
    expect(done.blocks).toBe(METERS.length * 2)
    const db = (store as SqlStore).db
    const left = await db.query<{ n: number }>(`SELECT count(*)::integer AS n FROM readings WHERE ts < '2026-03-01'`)
    expect(left.rows[0].n).toBe(0)
    const after = await answers(store)
    for (const url of URLS) expect(after[url], url).toBe(before[url])
    await columnsAreRows(store, "compacted")
    await blockExportStops(store)

    // the held-back frame arrives: at once from rows, after the next run from its merged block
    const late = frame(0, SKIPPED)
    await insertReadings(store, { meterId: "ca-0", boot: late[0].boot, seq: late[0].seq }, late, late[0].ts)
    const want = await answers(plain)
    const lateNow = await answers(store)
    await columnsAreRows(store, "late frame in rows beside its compacted month")
    const merged = await store.compactReadings(new Date("2026-03-05T00:00:00Z"))
    expect(merged).toMatchObject({ blocks: 1, merged: 1, readings: 4 })
    const lateMerged = await answers(store)
    await columnsAreRows(store, "late frame merged")
    for (const url of URLS) {
      expect(lateNow[url], `late, rows: ${url}`).toBe(want[url])
      expect(lateMerged[url], `late, merged: ${url}`).toBe(want[url])
    }
  }, 240_000)
})
