// A year of a city in the data tier, opt-in, not CI:
//   npm run bench:year -- [meters] [--engine postgres|pglite|both] [--read-ms ms] [--keep]
//   npm run bench:year -- --measure <kept schema>   (its sizes and the queries again, as it is)
// (default 1000 meters, both engines, the bridge's read budget)
// Loads meters × one year (2025) of 15-minute readings of seeded households (bench/household.ts)
// through the ingest path (one transaction per batch of 1,000 frames: ledger, readings, rollups)
// into PostgreSQL (a private schema, dropped afterwards) and/or PGlite (a temporary directory), then,
// before and after compacting all of 2025 into blocks (issue 24, store.compactReadings):
// - bytes per meter-year by table and in total (every table and index of the schema);
// - the query timings (median of 5) and whether each answer is the same after compaction;
// and meanwhile: compaction (readings, then the frame ledger) throughput and its cost to ingest
// running beside it, and ingest frames/s into a schema migrated without the "reading blocks" step
// against a fully migrated one. The last line is `bytes per meter-year, total: N` (PostgreSQL, after compaction).
import { execSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import pg from "pg"
import { StaQuery } from "../bridge/src/sta/query.js"
import { columnsJson } from "../bridge/src/store/columns-json.js"
import type { Db } from "../bridge/src/store/db.js"
import { openPglite, openPostgres } from "../bridge/src/store/engines.js"
import { MIGRATIONS, migrate } from "../bridge/src/store/migrations.js"
import { isPartitioned } from "../bridge/src/store/partitions.js"
import { setLocation } from "../bridge/src/store/registry.js"
import type { SqlStore } from "../bridge/src/store/sql-store.js"
import type { IngestTx, LedgerEntry, ReadingRow } from "../bridge/src/store/store.js"
import { SqlWrites } from "../bridge/src/store/writes.js"
import { readingRow } from "../testkit/rows.js"
import { Household } from "./household.js"

const URL = process.env.DATABASE_URL ?? "postgres://root@127.0.0.1:5432/test"
const args = process.argv.slice(2)
const option = (name: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined)
const ENGINE = option("--engine") ?? "both"
/** The reads' statement budget (ms); default the bridge's (BRIDGE_DEFAULTS.reads.statementMs). */
const READ_MS = option("--read-ms") === undefined ? undefined : Number(option("--read-ms"))
/** Keep the PostgreSQL schema (its name is printed) for a look at the data afterwards. */
const KEEP = args.includes("--keep")
/** Only measure a kept schema again (its sizes and the queries, as it is): `--measure bench_…`. */
const MEASURE = option("--measure")
const METERS = Number(args.find((a, i) => !a.startsWith("--") && !args[i - 1]?.startsWith("--")) ?? 1000)
if (!["postgres", "pglite", "both"].includes(ENGINE) || !(METERS > 0) || (READ_MS !== undefined && !(READ_MS > 0))) {
  console.error(
    "usage: npm run bench:year -- [meters] [--engine postgres|pglite|both] [--read-ms ms] [--keep] [--measure schema]",
  )
  process.exit(2)
}
const Y0 = Date.parse("2025-01-01T00:00:00Z")
const Y1 = Date.parse("2026-01-01T00:00:00Z")
const STEP = 900_000
const PER_YEAR = 365 * 96
const FRAME = 4 // intervals per frame
const BATCH_FRAMES = 1000
/** Batches into each schema for the ingest comparison (before / after the "reading blocks" step). */
const COMPARE_BATCHES = 200
/** Batches of ingest alone, before the compaction runs beside ingest. */
const ALONE_BATCHES = 50
/** Batches ingested at most while the compaction runs. */
const BESIDE_MAX_BATCHES = 20_000
/** Tables reported one by one (frame_blocks: the ledger's compacted form). */
const TABLES = [
  "readings",
  "reading_blocks",
  "rollup_hour",
  "rollup_day",
  "rollup_district_day",
  "rollup_district_month",
  "frames",
  "frame_blocks",
  "meter_latest",
] as const

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const ms = (x: number) => +x.toFixed(1)

interface Batch {
  frames: LedgerEntry[]
  rows: ReadingRow[]
}

/** The city's frames of intervals [from, to) (counted from 2025-01-01), time-major as they arrive. */
function* batches(homes: Household[], ids: string[], from: number, to = Infinity): Generator<Batch> {
  const span = Math.max(1, Math.floor(BATCH_FRAMES / ids.length)) * FRAME
  for (let s = from; s < to; s += span)
    for (let lo = 0; lo < ids.length; lo += BATCH_FRAMES) {
      const b: Batch = { frames: [], rows: [] }
      for (let k = lo; k < Math.min(ids.length, lo + BATCH_FRAMES); k++)
        for (let f = s; f < Math.min(to, s + span); f += FRAME) {
          const seq = f / FRAME + 1
          b.frames.push({ meterId: ids[k], boot: 1, seq, kind: "readings", at: new Date(Y0 + f * STEP) })
          for (let i = f; i < f + FRAME; i++) {
            const ts = Y0 + i * STEP
            b.rows.push(readingRow(ids[k], new Date(ts), { seq, idx: i - f, ...homes[k].next(ts) }))
          }
        }
      yield b
    }
}

/** The batch's writes, as the bridge's ingest does them. */
const write = (b: Batch) => async (tx: IngestTx) => {
  await tx.claimFrames(b.frames)
  await tx.writeReadings(b.rows)
}

/** The store's connection with every transaction (and statement) in another schema of the same database. */
function inSchema(db: Db, schema: string): Db {
  const transaction = <T>(fn: (tx: Db) => Promise<T>) =>
    db.transaction(async (tx) => {
      await tx.query(`SET LOCAL search_path TO ${schema}`)
      return fn(tx)
    })
  return {
    query: <T = Record<string, unknown>>(sql: string, params?: unknown[]) =>
      transaction((tx) => tx.query<T>(sql, params)),
    copyFrom: (table, columns, text) => transaction((tx) => tx.copyFrom(table, columns, text)),
    transaction,
    close: async () => {},
  }
}

/** An ingest path into a schema of its own (the store's SqlWrites on a connection in that schema). */
async function ingester(db: Db, engine: string, schema: string, steps: typeof MIGRATIONS, ids: string[]) {
  await db.query(`CREATE SCHEMA ${schema}`)
  const at = inSchema(db, schema)
  await migrate(at, engine, steps)
  const parts = { partitioned: await isPartitioned(at), months: new Set<string>() }
  const ingest = <T>(fn: (tx: IngestTx) => Promise<T>) => at.transaction((tx) => fn(new SqlWrites(tx, parts)))
  await register(ingest, (m, l) => setLocation(at, m, l), ids)
  return ingest
}

/** Registers the meters, in 10 districts, so that each day is counted in its meter's district. */
async function register(
  ingest: (fn: (tx: IngestTx) => Promise<void>) => Promise<void>,
  locate: (m: string, l: { lat: number; lon: number; address: null; district: string }) => Promise<unknown>,
  ids: string[],
) {
  await ingest((tx) => tx.touchMeters(ids.map((m) => ({ meterId: m, firstAt: new Date(Y0), lastAt: new Date(Y0) }))))
  for (const [i, m] of ids.entries())
    await locate(m, { lat: 52 + i / 1e4, lon: 13, address: null, district: `d${i % 10}` })
}

const TICK = Number(execSync("getconf CLK_TCK").toString().trim()) || 100

/**
 * CPU seconds of every process named postgres (user + system), with what the postmaster reaped of
 * its exited backends: the whole server, other sessions' backends included.
 */
function postgresCpuS() {
  let ticks = 0
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    let stat: string
    try {
      stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    } catch {
      continue // exited meanwhile
    }
    const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"))
    if (comm !== "postgres") continue
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])
  }
  return ticks / TICK
}

/** CPU of this process (PGlite's thread included) and of the PostgreSQL server since `cpu()`. */
function cpu(postgres: boolean) {
  const n0 = process.cpuUsage()
  const p0 = postgres ? postgresCpuS() : 0
  return () => {
    const n = process.cpuUsage(n0)
    return {
      nodeS: +((n.user + n.system) / 1e6).toFixed(1),
      postgresS: postgres ? +(postgresCpuS() - p0).toFixed(1) : null,
    }
  }
}

/** VACUUM (not FULL) and ANALYZE of every table of the store's schema. */
async function vacuum(store: SqlStore) {
  const { rows } = await store.db.query<{ t: string }>(
    `SELECT c.relname AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') ORDER BY 1`,
  )
  await store.db.query(`VACUUM ANALYZE ${rows.map((r) => r.t).join(", ")}`)
}

/**
 * Bytes per meter of each table (its partitions, TOAST and indexes) and of the whole schema: every
 * table that has storage (partitioned parents have none) with its TOAST and indexes, counted once.
 */
async function sizes(store: SqlStore, meters: number) {
  const out: Record<string, number> = {}
  let named = 0
  for (const t of TABLES) {
    const { rows } = await store.db.query<{ b: string }>(
      // a table that is not partitioned has no partition tree: its own size
      `SELECT COALESCE((SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree(to_regclass($1))
         WHERE isleaf), pg_total_relation_size(to_regclass($1)), 0) AS b`,
      [t],
    )
    named += Number(rows[0].b)
    out[t] = Math.round(Number(rows[0].b) / meters)
  }
  const { rows } = await store.db.query<{ b: string }>(
    `SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0) AS b FROM pg_class c
     JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')`,
  )
  const total = Number(rows[0].b)
  out.otherTables = Math.round((total - named) / meters)
  out.total = Math.round(total / meters)
  return out
}

/** The queries of issue 24's Measure section: each one's answer and its median time of 5. */
async function queries(store: SqlStore, meter: string) {
  const year = { from: new Date(Y0), to: new Date(Y1) }
  const sta = new StaQuery(store, "http://bench/sta/v1.1")
  const filter = `phenomenonTime ge 2025-01-01T00:00:00Z and phenomenonTime lt 2026-01-01T00:00:00Z`
  const calls: Record<string, () => Promise<unknown>> = {
    oneMeterByMonth: () => store.consumption(meter, { bucket: "month", ...year }),
    oneMeterReadings: () => store.readings(meter, { ...year, limit: 40_000 }),
    // the store call and the JSON text the route sends (GET /meters/{id}/readings/columns)
    oneMeterReadingsAsColumns: async () => {
      const c = await store.readingColumns(meter, { ...year, limit: 40_000 })
      columnsJson(meter, c.count, c.columns, null)
      return c
    },
    oneMeterBy15min: () => store.consumption(meter, { bucket: "15min", ...year }),
    fleetByDay: () => store.fleetConsumption({ bucket: "day", ...year }),
    fleetByMonth: () => store.fleetConsumption({ bucket: "month", ...year }),
    staFilterYear: () =>
      sta.get(`Datastreams('${meter}:water')/Observations`, [
        ["$filter", filter],
        ["$top", "100"],
      ]),
  }
  const answers: Record<string, string> = {}
  const times: Record<string, number> = {}
  const errors: Record<string, string> = {}
  for (const [name, call] of Object.entries(calls)) {
    const first = performance.now()
    try {
      answers[name] = JSON.stringify(await call())
    } catch (e) {
      // reported, not thrown: a read over its budget (57014, 54001) is a finding of the bench
      const { code, message } = e as { code?: string; message?: string }
      answers[name] = errors[name] = `${code ?? "error"}: ${message ?? String(e)}`
      times[name] = ms(performance.now() - first)
      continue
    }
    const t: number[] = []
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now()
      try {
        await call()
      } catch (e) {
        const { code, message } = e as { code?: string; message?: string }
        errors[name] = `run ${i + 2}: ${code ?? "error"}: ${message ?? String(e)}`
      }
      t.push(performance.now() - t0)
    }
    times[name] = ms(median(t))
  }
  const length = (name: string, pick: (x: never) => unknown[] = (x) => x) =>
    answers[name].startsWith("{") || answers[name].startsWith("[")
      ? pick(JSON.parse(answers[name]) as never).length
      : null
  const counts = {
    readings: length("oneMeterReadings"),
    readingsAsColumns: answers.oneMeterReadingsAsColumns.startsWith("{")
      ? (JSON.parse(answers.oneMeterReadingsAsColumns) as { count: number }).count
      : null,
    fifteenMinutes: length("oneMeterBy15min"),
    staObservations: length("staFilterYear", (x: { json: { value: unknown[] } }) => x.json.value),
  }
  return { answers, times, counts, errors }
}

async function run(engine: "postgres" | "pglite") {
  const reads = READ_MS === undefined ? undefined : { statementMs: READ_MS }
  const schema = `bench_${randomBytes(4).toString("hex")}`
  const dir = engine === "pglite" ? mkdtempSync(join(tmpdir(), "cm-bench-year-")) : undefined
  const store = (
    engine === "postgres" ? await openPostgres(URL, { schema, reads }) : await openPglite(dir, { schema, reads })
  ) as SqlStore
  const onPostgres = engine === "postgres"
  try {
    const ids = [...Array(METERS).keys()].map((i) => `y-${String(i).padStart(5, "0")}`)
    const homes = ids.map((_, i) => new Household(i + 1))
    await register(
      (fn) => store.ingestBatch(fn),
      (m, l) => store.setLocation(m, l),
      ids,
    )
    // this test server runs without autovacuum, PGlite has none: the bench vacuums in its stead
    const autovacuum = onPostgres && (await store.db.query<{ a: string }>(`SHOW autovacuum`)).rows[0].a === "on"
    if (!autovacuum) console.error(`${engine}: no autovacuum; the bench vacuums rollup_day every 200 batches`)

    // 1. the year, through the ingest path
    let n = 0
    let rows = 0
    const t0 = performance.now()
    for (const b of batches(homes, ids, 0, PER_YEAR)) {
      await store.ingestBatch(write(b))
      rows += b.rows.length
      if (++n % 200 === 0 && !autovacuum) await store.db.query(`VACUUM rollup_day`)
    }
    const loadS = (performance.now() - t0) / 1000
    console.error(`${engine}: loaded ${rows} readings in ${loadS.toFixed(1)} s`)

    // 2. before compaction
    await vacuum(store)
    const bytesBefore = await sizes(store, METERS)
    const before = await queries(store, ids[0])
    console.error(`${engine}: measured before compaction`)

    // 3. ingest frames/s into a schema before the "reading blocks" step and a fully migrated one,
    // the same frames (2026's first), alternating batches and which schema goes first
    // the steps after it are kept (today's claim needs the ledger blocks' tables)
    const step = MIGRATIONS.findIndex((s) => s.name === "reading blocks")
    if (step < 0) throw new Error(`no migration step named "reading blocks"`)
    const without = MIGRATIONS.filter((_, i) => i !== step)
    const pre = await ingester(store.db, engine, `${schema}_pre`, without, ids)
    const post = await ingester(store.db, engine, `${schema}_post`, MIGRATIONS, ids)
    const more = batches(homes, ids, PER_YEAR)
    const spent = { pre: 0, post: 0 }
    let frames = 0
    for (let k = 0; k < Math.min(COMPARE_BATCHES, Math.ceil(n / 4)); k++) {
      const b = more.next().value as Batch
      frames += b.frames.length
      for (const which of k % 2 ? (["pre", "post"] as const) : (["post", "pre"] as const)) {
        const t = performance.now()
        await (which === "pre" ? pre : post)(write(b))
        spent[which] += performance.now() - t
      }
    }
    console.error(`${engine}: ingest compared, ${frames} frames into each schema`)
    const framesPerS = { pre: (frames * 1000) / spent.pre, post: (frames * 1000) / spent.post }

    // 4. ingest alone (the fully migrated schema), then beside the compaction of the whole year
    const ingestSome = async (count: number, until: () => boolean) => {
      let r = 0
      let k = 0
      const t = performance.now()
      for (; k < count && !until(); k++) {
        const b = more.next().value as Batch
        await post(write(b))
        r += b.rows.length
      }
      return { batches: k, rows: r, s: (performance.now() - t) / 1000 }
    }
    const aloneCpu = cpu(onPostgres)
    const alone = await ingestSome(ALONE_BATCHES, () => false)
    const aloneCost = aloneCpu()
    let compacting = true
    const besideCpu = cpu(onPostgres)
    const c0 = performance.now()
    let ledgerS = 0
    let readingsS = 0
    const compaction = (async () => {
      const readings = await store.compactReadings(new Date(Y1))
      const l0 = performance.now()
      readingsS = (l0 - c0) / 1000
      const ledger = await store.compactLedger(new Date(Y1))
      ledgerS = (performance.now() - l0) / 1000
      return { readings, ledger }
    })().finally(() => (compacting = false))
    const beside = await ingestSome(BESIDE_MAX_BATCHES, () => !compacting)
    const { readings: result, ledger } = await compaction
    const compactS = (performance.now() - c0) / 1000
    const besideCost = besideCpu()
    console.error(`${engine}: compacted ${result.readings} readings in ${compactS.toFixed(1)} s`)

    // 5. after compaction
    await vacuum(store)
    const bytesAfter = await sizes(store, METERS)
    const after = await queries(store, ids[0])
    // the emptied ledger rewritten: what plain VACUUM leaves of its index, and what FULL gives back
    // (nothing while another session's snapshot is older than the deletes)
    await store.db.query(`VACUUM FULL frames`)
    const totalAfterFullFrames = (await sizes(store, METERS)).total
    const identical = Object.fromEntries(
      Object.keys(before.answers).map((q) => [
        q,
        before.errors[q] || after.errors[q]
          ? "not compared: an error (queryErrors)"
          : before.answers[q] === after.answers[q],
      ]),
    )
    const rate = (x: { rows: number; s: number }) => Math.round(x.rows / x.s)
    return {
      engine,
      meters: METERS,
      readings: rows,
      loadS: +loadS.toFixed(1),
      loadRowsPerS: Math.round(rows / loadS),
      bytesPerMeterYear: { before: bytesBefore, after: bytesAfter },
      queryMs: { before: before.times, after: after.times },
      answersIdenticalAfterCompaction: identical,
      answerSizes: before.counts,
      queryErrors: { before: before.errors, after: after.errors },
      totalAfterVacuumFullFrames: totalAfterFullFrames,
      compaction: {
        blocks: result.blocks,
        readings: result.readings,
        truncated: result.truncated.length,
        busy: result.busy,
        ledger: { ...ledger, s: +ledgerS.toFixed(1) },
        readingsS: +readingsS.toFixed(1),
        s: +compactS.toFixed(1),
        // readings alone; with the ledger: meterDaysPerSWithLedger
        meterDaysPerS: Math.round((METERS * 365) / readingsS),
        meterDaysPerSWithLedger: Math.round((METERS * 365) / compactS),
      },
      ingestBesideCompaction: {
        alone: { ...alone, s: +alone.s.toFixed(1), rowsPerS: rate(alone), cpu: aloneCost },
        beside: { ...beside, s: +beside.s.toFixed(1), rowsPerS: rate(beside), cpu: besideCost },
        ratio: +(rate(beside) / rate(alone)).toFixed(2),
      },
      ingestFramesPerS: {
        framesEach: frames,
        withoutReadingBlocksStep: Math.round(framesPerS.pre),
        fullyMigrated: Math.round(framesPerS.post),
        ratio: +(framesPerS.post / framesPerS.pre).toFixed(3),
      },
    }
  } finally {
    await store.close()
    if (dir) rmSync(dir, { recursive: true, force: true })
    else if (KEEP) console.error(`${engine}: kept schema ${schema} (and ${schema}_pre, ${schema}_post)`)
    else {
      const c = new pg.Client({ connectionString: URL })
      await c.connect()
      for (const s of [schema, `${schema}_pre`, `${schema}_post`]) await c.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`)
      await c.end()
    }
  }
}

if (MEASURE) {
  const store = (await openPostgres(URL, {
    schema: MEASURE,
    reads: READ_MS === undefined ? undefined : { statementMs: READ_MS },
  })) as SqlStore
  try {
    const meters = (await store.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM meters`)).rows[0].n
    const { times, counts, errors } = await queries(store, "y-00000")
    const bytes = await sizes(store, meters)
    console.log(
      JSON.stringify({ schema: MEASURE, meters, bytesPerMeterYear: bytes, queryMs: times, counts, errors }, null, 2),
    )
    console.log(`bytes per meter-year, total: ${bytes.total}`)
  } finally {
    await store.close()
  }
  process.exit(0)
}

const engines = ENGINE === "both" ? (["postgres", "pglite"] as const) : ([ENGINE] as ["postgres" | "pglite"])
const totals: Record<string, number> = {}
for (const engine of engines) {
  const out = await run(engine)
  console.log(JSON.stringify(out, null, 2))
  totals[engine] = out.bytesPerMeterYear.after.total
}
// issue 24's figure is PostgreSQL's; a PGlite-only run prints PGlite's, said on the line before
if (totals.postgres === undefined) console.log("PGlite only: its total after compaction")
console.log(`bytes per meter-year, total: ${totals.postgres ?? totals.pglite}`)
