// Backup and restore times, opt-in, not CI: `npm run bench:backup -- [meters] [pglite]` (default 100).
// Seeds meters × one year of 15-minute readings (testkit/fleet-seed.ts: readings and meter_latest in
// SQL, no rollups) into a private PostgreSQL schema, then times `citymeter backup` (pg_dump -Fc) and
// `citymeter restore` (pg_restore) into the emptied schema, as processes; the schema is dropped after.
// With `pglite`: the same seed in a PGlite directory, dumpDataDir and loadDataDir into a new one.
import { execFileSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { mkdtempSync, rmSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import pg from "pg"
import { openPglite, openPostgres } from "../bridge/src/store/engines.js"
import { seedFleet } from "../testkit/fleet-seed.js"
import { runCitymeter } from "../testkit/process.js"

const URL = process.env.DATABASE_URL ?? "postgres://root@127.0.0.1:5432/test"
const METERS = Number(process.argv[2] ?? 100)
const PER_YEAR = 365 * 96
const schema = `bench_${randomBytes(4).toString("hex")}`
const dir = mkdtempSync(join(tmpdir(), "cm-bench-backup-"))
const file = join(dir, "year.dump")
const du = (d: string) =>
  Number(execFileSync("du", ["-sb", d], { encoding: "utf8" }).split("\t")[0]).toLocaleString("en")
const since = (t0: number) => `${((performance.now() - t0) / 1000).toFixed(1)} s`
if (process.argv[3] === "pglite") {
  const src = join(dir, "src")
  let t0 = performance.now()
  const store = await openPglite(src)
  await seedFleet(store, METERS, PER_YEAR)
  await store.close()
  console.log(`seeded ${METERS} meters × ${PER_YEAR} readings (PGlite) in ${since(t0)}, ${du(src)} B on disk`)
  for (const [what, args] of [
    ["backup", ["backup", "--database", `pglite:${src}`, "--out", file]],
    ["restore", ["restore", "--database", `pglite:${join(dir, "dst")}`, "--from", file]],
  ] as const) {
    t0 = performance.now()
    const r = await runCitymeter([...args])
    if (r.code !== 0) throw new Error(`${what}: ${r.stderr}`)
    console.log(`${what}: ${since(t0)} wall; ${r.stdout.trim()}`)
  }
  console.log(`dump ${statSync(file).size.toLocaleString("en")} B; restored ${du(join(dir, "dst"))} B on disk`)
  rmSync(dir, { recursive: true, force: true })
  process.exit(0)
}
const c = new pg.Client({ connectionString: URL })
await c.connect()
const size = async () =>
  (
    await c.query<{ b: string }>(
      `SELECT sum(pg_total_relation_size(format('%I.%I', schemaname, tablename)))::bigint AS b
     FROM pg_tables WHERE schemaname = $1`,
      [schema],
    )
  ).rows[0].b
try {
  let t0 = performance.now()
  const store = await openPostgres(URL, { schema })
  await seedFleet(store, METERS, PER_YEAR)
  await store.close()
  console.log(
    `seeded ${METERS} meters × ${PER_YEAR} readings (${METERS * PER_YEAR} rows) in ${since(t0)}, ${Number(await size()).toLocaleString("en")} B on disk`,
  )
  for (const [what, args] of [
    ["backup", ["backup", "--database", URL, "--schema", schema, "--out", file]],
    ["restore", ["restore", "--database", URL, "--schema", schema, "--from", file, "--force"]],
  ] as const) {
    t0 = performance.now()
    const r = await runCitymeter([...args])
    if (r.code !== 0) throw new Error(`${what}: ${r.stderr}`)
    console.log(`${what}: ${since(t0)} wall; ${r.stdout.trim()}`)
  }
  console.log(
    `dump ${statSync(file).size.toLocaleString("en")} B; restored ${Number(await size()).toLocaleString("en")} B on disk`,
  )
} finally {
  await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
  await c.end()
  rmSync(dir, { recursive: true, force: true })
}
