// The bulk export as one streamed query per file (store/export-rows.ts), on both engines: the bytes
// of every file are those of the former paths (one query per meter and keyset page, kept as
// perMeterLines; one cursor of engine-written lines on PostgreSQL), chunks cross meters and ties
// of ts (PGlite's keyset batches at any size; PostgreSQL's COPY chunks), and a client that goes
// away ends the query and gives its connection back while most of the file is still unread.
import { randomBytes } from "node:crypto"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { buildApp } from "../../bridge/src/api.js"
import { createMetrics } from "../../bridge/src/metrics.js"
import { perMeterLines } from "../../bridge/src/routes/export.js"
import { openPglite, openPostgres } from "../../bridge/src/store/engines.js"
import type { ExportFormat } from "../../bridge/src/store/export-rows.js"
import type { Store } from "../../bridge/src/store/store.js"
import { readingRow } from "../../testkit/rows.js"
import { insertReadings, touchMeter } from "../../testkit/store-writes.js"
import { dropSchema, PG_URL } from "../helpers.js"
import { cursorExportPath, formerExportPath } from "../../testkit/export-paths.js"
import type { SqlStore } from "../../bridge/src/store/sql-store.js"

const DAY = 86400_000
const M0 = Date.parse("2026-03-01T00:00:00Z")
const day = (t: number) => new Date(t).toISOString().slice(0, 10)
// ids whose order differs between byte order and a linguistic collation; one meter without readings
const IDS = ["m-b", "M-a", "m_10", "m-9", "m-idle", "a-1"]
const BIG = "m-big"
const BIG_N = 40_000

/** Readings of one frame: every channel varied, some absent, one negative power. */
function frame(meterId: string, boot: number, seq: number, start: number, n: number, stepS: number) {
  return Array.from({ length: n }, (_, i) =>
    readingRow(meterId, new Date(start + i * stepS * 1000), {
      intervalS: stepS,
      boot,
      seq,
      idx: i,
      volumeMl: i % 5 === 0 ? null : i % 7,
      waterTotalMl: 1000 + seq * 100 + i,
      energyWh: i % 3,
      energyTotalWh: 5000 + i,
      powerW: -20 + (i % 50),
      voltageDv: i % 4 === 0 ? null : 2300 + (i % 9),
      pressureAvgPa: i % 2 ? 300_000 + i : null,
      backfill: i % 11 === 0,
      timeSynced: i % 13 !== 0,
    }),
  )
}

async function seed(store: Store) {
  const at = new Date(M0)
  for (const id of [...IDS, BIG]) await touchMeter(store, id, new Date(M0 - DAY))
  let seq = 1
  for (const id of IDS.filter((m) => m !== "m-idle")) {
    // the day before the month, two days of the month, a reboot whose readings share ts with boot 1's
    for (const start of [M0 - 3600_000, M0 + 2 * DAY, M0 + 9 * DAY])
      await insertReadings(store, { meterId: id, boot: 1, seq }, frame(id, 1, seq++, start, 90, 900), at)
    await insertReadings(store, { meterId: id, boot: 2, seq: 1 }, frame(id, 2, 1, M0 + 9 * DAY, 40, 900), at)
  }
  // more than a batch in one meter's day, and in the month: batches break inside a meter
  await insertReadings(store, { meterId: BIG, boot: 1, seq: 1 }, frame(BIG, 1, 1, M0 + 2 * DAY, BIG_N, 5), at)
  // readings of a meter not registered: neither path exports them
  await insertReadings(store, { meterId: "z-ghost", boot: 1, seq: 1 }, frame("z-ghost", 1, 1, M0, 10, 900), at)
}

async function collect(chunks: AsyncIterable<string | Uint8Array>) {
  const parts: Buffer[] = []
  let largest = 0
  for await (const c of chunks) {
    parts.push(typeof c === "string" ? Buffer.from(c) : Buffer.from(c.buffer, c.byteOffset, c.byteLength))
    largest = Math.max(largest, parts[parts.length - 1].length)
  }
  return { text: Buffer.concat(parts).toString(), batches: parts.length, largest }
}

describe.each(["postgres", "pglite"] as const)("the export's streamed query on %s", (engine) => {
  let store: Store
  const schema = `t_${randomBytes(6).toString("hex")}`
  beforeAll(async () => {
    store = engine === "postgres" ? await openPostgres(PG_URL, { schema }) : await openPglite(undefined)
    await seed(store)
  })
  afterAll(async () => {
    await store?.close()
    if (engine === "postgres") await dropSchema(schema)
  })

  test("every file's bytes equal the former path's (day and month, CSV and NDJSON)", async () => {
    const now = createMetrics()
    const app = buildApp({ store, metrics: now })
    const old = buildApp({ store: formerExportPath(store), metrics: createMetrics() })
    // PostgreSQL: also the cursor of engine-written lines that the export was before COPY
    const reads = (store as SqlStore).db.reads
    const cursor = reads?.session && buildApp({ store: cursorExportPath(store, reads), metrics: createMetrics() })
    expect(cursor === undefined).toBe(engine === "pglite")
    try {
      for (const period of ["2026-03", day(M0 + 2 * DAY), day(M0 + 9 * DAY), day(M0 - DAY), "2026-02", "2026-04"])
        for (const format of ["csv", "ndjson"]) {
          const url = `/export/readings/${period}.${format}`
          const [a, b] = await Promise.all([app.inject({ url }), old.inject({ url })])
          expect(a.statusCode, url).toBe(200)
          expect(b.statusCode, url).toBe(200)
          expect(a.rawPayload.equals(b.rawPayload), url).toBe(true)
          expect(a.headers["content-type"]).toBe(b.headers["content-type"])
          if (cursor) expect((await cursor.inject({ url })).rawPayload.equals(a.rawPayload), url).toBe(true)
        }
      const month = (await app.inject({ url: "/export/readings/2026-03.csv" })).body.split("\r\n")
      // header, 5 meters × (86 of the frame begun in February + 2 × 90 + 40), the big meter, the final CRLF
      expect(month.length).toBe(1 + 5 * 306 + BIG_N + 1)
      expect(month.some((l) => l.startsWith("z-ghost"))).toBe(false)
    } finally {
      await Promise.all([app.close(), old.close(), cursor?.close()])
    }
  })

  test("any batch size gives the former path's lines: chunks break inside a meter and inside ties", async () => {
    const month = [new Date(M0), new Date(M0 + 31 * DAY)] as const
    const day9 = [new Date(M0 + 9 * DAY), new Date(M0 + 10 * DAY)] as const
    // month: 1,000 breaks inside a 306-row meter and inside m-big (42 batches; 333's 125 took 103 s
    // on PGlite at load ≈20); the ties are broken by day 9's batches of 2 and 7
    for (const [[from, to], sizes] of [
      [day9, [2, 7]],
      [month, [1000, 5000, 50_000]],
    ] as const) {
      for (const format of ["csv", "ndjson"] as const) {
        const { text: expected } = await collect(perMeterLines(store, from, to, format))
        const lines = expected.split("\n").length - 1
        expect(lines).toBe(from === day9[0] ? 5 * 130 : 5 * 306 + BIG_N)
        // PostgreSQL's COPY takes no batch size (export-rows.ts): one run per range is the whole case
        for (const size of engine === "pglite" ? sizes : sizes.slice(0, 1)) {
          const { text, batches, largest } = await collect(store.exportLines(from, to, format, size))
          expect(text === expected, `${format}, batch ${size}`).toBe(true)
          // PGlite: keyset batches of `size` lines; PostgreSQL: COPY's chunks as the socket gives them
          // (the batch size does not apply), a month's in many, none large
          if (engine === "pglite") expect(batches).toBe(Math.ceil(lines / size))
          else if (from !== day9[0]) expect(batches).toBeGreaterThan(10)
          expect(largest).toBeLessThan(engine === "pglite" ? 16 * 2 ** 20 : 2 ** 20)
        }
      }
    }
  }, 240_000)

  test("a client gone mid-file ends the query and gives its connection back; most batches never read", async () => {
    let batches = 0
    let bytes = 0
    let ended = false
    const watched = new Proxy(store, {
      get(target, key) {
        if (key === "exportLines")
          return async function* (from: Date, to: Date, format: ExportFormat, size?: number) {
            try {
              for await (const b of target.exportLines(from, to, format, size)) {
                batches++
                bytes += b.length
                yield b
              }
            } finally {
              ended = true
            }
          }
        const value = Reflect.get(target, key, target) as unknown
        return typeof value === "function" ? value.bind(target) : value
      },
    })
    const app = buildApp({ store: watched, metrics: createMetrics() })
    const url = await app.listen({ port: 0, host: "127.0.0.1" })
    try {
      const abort = new AbortController()
      const res = await fetch(`${url}/export/readings/2026-03.ndjson`, { signal: abort.signal })
      const reader = res.body!.getReader()
      const first = await reader.read()
      expect(first.value!.length).toBeGreaterThan(0)
      abort.abort()
      await reader.read().catch(() => {})
      for (let i = 0; i < 100 && !ended; i++) await new Promise((r) => setTimeout(r, 50))
      // ended: the store's generator has returned, after its ROLLBACK and the connection's release
      expect(ended).toBe(true)
      // 41,530 rows in the month: back-pressure held the rest unread (PGlite: 5,000 a batch; PostgreSQL:
      // COPY's chunks, the rest of the month held back in the engine)
      if (engine === "pglite") expect(batches).toBeLessThan(6)
      const { text: whole } = await collect(store.exportLines(new Date(M0), new Date(M0 + 31 * DAY), "ndjson"))
      expect(bytes).toBeLessThan(whole.length / 2)
      // the export answers again in full
      const again = await fetch(`${url}/export/readings/${day(M0 + 9 * DAY)}.csv`)
      expect((await again.text()).split("\r\n").length).toBe(1 + 5 * 130 + 1)
    } finally {
      await app.close()
    }
  })
})
