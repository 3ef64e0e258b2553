// Compaction is crash-safe and exactly-once (issue 24 item 2). `citymeter compact` runs in a
// process of its own, one meter per transaction, over two months of readings (one of them already
// compacted once, with late frames since); after the k-th committed batch, plus a few
// milliseconds, the process is killed (SIGKILL) or, on PostgreSQL, its connection is cut
// (pg_terminate_backend). After five faults (two on PGlite) a run finishes. Every reading is then still there
// exactly once, byte for byte as before, and no row of the compacted months is left in row form.
import { spawn } from "node:child_process"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import pg from "pg"
import { afterAll, describe, expect, test } from "vitest"
import { openStore } from "../../bridge/src/store/engines.js"
import type { SqlStore } from "../../bridge/src/store/sql-store.js"
import type { ReadingRow, Store } from "../../bridge/src/store/store.js"
import { readingRow } from "../../testkit/rows.js"
import { dropSchema, PG_URL, uid } from "../helpers.js"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..")
const METERS = 6
const DAYS = 40 // 2026-01-01 … 2026-02-09
const T0 = Date.UTC(2026, 0, 1)
const STEP = 900_000

/** A meter's readings, frame by frame (4 intervals), with NULL channels, a reboot and flags. */
function meterFrames(i: number) {
  const meterId = `cf-${i}`
  let water = 1_000_000 * i
  let energy = 50_000
  const frames: ReadingRow[][] = []
  for (let k = 0; k < (DAYS * 96) / 4; k++) {
    const boot = k < 700 ? 1 : 2
    const seq = boot === 1 ? k + 1 : k - 699
    const rows: ReadingRow[] = []
    for (let idx = 0; idx < 4; idx++) {
      const n = k * 4 + idx
      const volume = (n * 7919 + i * 13) % 23 === 0 ? 0 : ((n * 2654435761) >>> 20) % 900
      water += volume
      const e = (n % 96) + i
      energy += e
      rows.push(
        readingRow(meterId, new Date(T0 + n * STEP + (n % 97 === 0 ? 1234 : 0)), {
          boot,
          seq,
          idx,
          volumeMl: volume,
          reverseMl: n % 50 === 0 ? 3 : 0,
          waterTotalMl: n % 211 === 5 ? null : water,
          energyWh: i % 2 ? null : e,
          energyTotalWh: i % 2 ? null : energy,
          powerW: i % 2 ? null : e * 4 - 100,
          voltageDv: i % 2 ? null : 2300 + ((n * 31) % 17) - 8,
          pressureAvgPa: n % 333 === 1 ? null : 300_000 + ((n * 97) % 2000),
          pressureMinPa: n % 333 === 1 ? null : 299_000 + ((n * 97) % 2000),
          pressureMaxPa: n % 333 === 1 ? null : 301_500 + ((n * 97) % 2000),
          timeSynced: n % 400 !== 0,
          backfill: k % 9 === 0,
          tsEstimated: n % 500 === 3,
          afterReboot: k === 700 && idx === 0,
        }),
      )
    }
    frames.push(rows)
  }
  return frames
}

async function write(store: Store, frames: ReadingRow[][]) {
  for (let i = 0; i < frames.length; i += 200) {
    const batch = frames.slice(i, i + 200)
    await store.ingestBatch(async (tx) => {
      const at = batch[0][0].ts
      await tx.touchMeters(
        [...new Set(batch.map((f) => f[0].meterId))].map((m) => ({ meterId: m, firstAt: at, lastAt: at })),
      )
      await tx.claimFrames(
        batch.map((f) => ({
          meterId: f[0].meterId,
          boot: f[0].boot,
          seq: f[0].seq,
          kind: "readings" as const,
          at: f[0].ts,
        })),
      )
      await tx.writeReadings(batch.flat())
    })
  }
}

/** Every meter's readings through the API's read, and the duplicates and rows left (must be none). */
async function snapshot(store: Store) {
  const db = (store as SqlStore).db
  const readings: Record<string, ReadingRow[]> = {}
  for (let i = 0; i < METERS; i++) readings[`cf-${i}`] = await store.readings(`cf-${i}`, { limit: 100_000 })
  const { rows: dup } = await db.query(
    `SELECT meter_id, boot, seq, idx, ts FROM readings_all GROUP BY 1, 2, 3, 4, 5 HAVING count(*) > 1 LIMIT 5`,
  )
  const { rows: left } = await db.query<{ n: number }>(
    `SELECT count(*)::integer AS n FROM readings WHERE ts < '2026-02-01'`,
  )
  return { readings, duplicates: dup, rowsLeftBeforeFebruary: Number(left[0].n) }
}

/** Runs `citymeter compact`; with `fault`, strikes after the k-th committed batch. Resolves when the process ends. */
function compactRun(
  database: string,
  schema: string | undefined,
  app: string,
  fault?: { k: number; strike: () => void },
) {
  const args = ["cli/bin/citymeter.js", "compact", "--database", database, "--before", "2026-02-20T00:00:00Z"]
  if (schema) args.push("--schema", schema)
  args.push("--meters-per-tx", "1")
  const p = spawn(process.execPath, args, { cwd: root, env: { ...process.env, PGAPPNAME: app } })
  let out = ""
  let err = ""
  let struck = false
  p.stdout.on("data", (b: Buffer) => {
    out += b.toString()
    if (fault && !struck && out.includes(`batch ${fault.k} committed`)) {
      struck = true
      setTimeout(fault.strike, Math.floor(Math.random() * 40))
    }
  })
  p.stderr.on("data", (b: Buffer) => (err += b.toString()))
  return {
    process: p,
    done: new Promise<{ code: number | null; out: string; err: string; struck: boolean }>((res) =>
      p.on("close", (code) => res({ code, out, err, struck })),
    ),
  }
}

describe.each(["postgres", "pglite"] as const)("compaction under faults: %s", (engine) => {
  const cleanup: (() => Promise<void>)[] = []
  afterAll(async () => {
    for (const c of cleanup) await c()
  })

  test("killed or cut after random batches, it loses no reading and stores none twice", async () => {
    const schema = engine === "postgres" ? `t_${uid("cf").replace("-", "_")}` : undefined
    const database = engine === "postgres" ? PG_URL : `pglite:${mkdtempSync(join(tmpdir(), "cm-compact-"))}`
    if (schema) cleanup.push(() => dropSchema(schema))
    const all = Array.from({ length: METERS }, (_, i) => meterFrames(i))
    // January first, less every 7th frame; January compacted; then the rest and the late frames
    let store = await openStore(database, { schema })
    await write(
      store,
      all.flatMap((f) => f.filter((x, k) => x[0].ts.getTime() < Date.UTC(2026, 1, 1) && k % 7 !== 3)),
    )
    const first = await store.compactReadings(new Date("2026-02-02T00:00:00Z"))
    expect(first.blocks).toBe(METERS)
    await write(
      store,
      all.flatMap((f) => f.filter((x, k) => x[0].ts.getTime() >= Date.UTC(2026, 1, 1) || k % 7 === 3)),
    )
    const before = await snapshot(store)
    expect(before.readings["cf-0"]).toHaveLength(DAYS * 96)
    expect(before.rowsLeftBeforeFebruary).toBeGreaterThan(0) // the late frames, in row form
    await store.close()

    const app = uid("cm-compact")
    const cut = async () => {
      const c = new pg.Client({ connectionString: PG_URL })
      await c.connect()
      await c.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, [app])
      await c.end()
    }
    const faults: string[] = []
    // PGlite: only kills, and each process opens the directory for seconds (commit 9565bf7)
    for (let i = 0; i < (engine === "pglite" ? 2 : 5); i++) {
      const k = 1 + Math.floor(Math.random() * (METERS - 1))
      const kind = engine === "postgres" && i % 2 === 1 ? "cut" : "kill"
      const run = compactRun(database, schema, app, {
        k,
        strike: () => void (kind === "kill" ? run.process.kill("SIGKILL") : cut()),
      })
      const r = await run.done
      expect(r.struck, r.err).toBe(true)
      faults.push(`${kind} after batch ${k}: exit ${r.code}`)
    }
    const last = await compactRun(database, schema, app).done
    expect(last.code, last.err).toBe(0)

    store = await openStore(database, { schema })
    const after = await snapshot(store)
    await store.close()
    expect(after.duplicates).toEqual([])
    expect(after.rowsLeftBeforeFebruary).toBe(0)
    for (const m of Object.keys(before.readings))
      expect(JSON.stringify(after.readings[m]), `${m} after ${faults.join("; ")}`).toBe(
        JSON.stringify(before.readings[m]),
      )
  }, 240_000)
})
