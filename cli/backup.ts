// `citymeter backup` and `citymeter restore`: the data tier to one file and back.
// PostgreSQL: pg_dump's custom format (-Fc), one snapshot (REPEATABLE READ), so a backup taken
// while ingest writes is consistent: every ingest batch is in it whole or not at all. Restore:
// pg_restore into an empty database or schema. PGlite: its own dump of the data directory
// (dumpDataDir, a gzipped tar), restored with loadDataDir into an empty directory. PGlite is one
// process: the CLI opens the directory itself, so the bridge must be stopped for both.
import { spawn } from "node:child_process"
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from "node:fs"
import { readFile, writeFile } from "node:fs/promises"
import { join } from "node:path"
import { PGlite } from "@electric-sql/pglite"
import type { Command } from "commander"
import pg from "pg"
import { CliError, usage } from "./errors.js"

const SCHEMA = /^[a-z_][a-z0-9_]{0,62}$/

interface Target {
  database: string
  schema?: string
}

type Engine = { kind: "postgres"; url: string } | { kind: "pglite"; dir: string }

function engineOf(o: Target): Engine {
  if (o.schema !== undefined && !SCHEMA.test(o.schema)) throw usage(`--schema: invalid schema name '${o.schema}'`)
  if (/^postgres(ql)?:\/\//.test(o.database)) return { kind: "postgres", url: o.database }
  if (o.database.startsWith("pglite:")) {
    const dir = o.database.slice("pglite:".length)
    if (dir === "" || dir === "memory")
      throw usage("--database pglite:memory has nothing to back up: give pglite:<dir>")
    if (o.schema !== undefined) throw usage("--schema is for PostgreSQL; a PGlite backup holds its whole directory")
    return { kind: "pglite", dir }
  }
  throw usage(`--database must be postgres://… or pglite:<dir> (got ${o.database.split(":")[0]}:)`)
}

/** Runs a PostgreSQL client tool; its stderr becomes the error. */
function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"] })
    let err = ""
    p.stderr.on("data", (b) => (err += b))
    p.on("error", (e: NodeJS.ErrnoException) =>
      reject(e.code === "ENOENT" ? new CliError(`${cmd} not found: install PostgreSQL's client tools`) : e),
    )
    p.on("close", (code) => (code === 0 ? resolve() : reject(new CliError(`${cmd} failed (${code}): ${err.trim()}`))))
  })
}

const nTables = (n: number) => `${n} table${n === 1 ? "" : "s"}`
const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`
const secs = (t0: number) => `${((performance.now() - t0) / 1000).toFixed(1)} s`

/** Tables in the target (the schema's, or the database's outside the system schemas). */
async function pgTables(url: string, schema?: string): Promise<number> {
  const c = new pg.Client({ connectionString: url })
  await c.connect()
  try {
    const { rows } = await c.query<{ n: string }>(
      `SELECT count(*) AS n FROM pg_tables WHERE ($1::text IS NULL AND schemaname NOT IN
       ('pg_catalog', 'information_schema') AND schemaname NOT LIKE '\\_timescaledb%') OR schemaname = $1`,
      [schema ?? null],
    )
    return Number(rows[0].n)
  } finally {
    await c.end()
  }
}

/** An empty schema for pg_restore --schema (which restores what is in the schema, not the schema itself). */
async function pgEmptySchema(url: string, schema: string, drop: boolean) {
  const c = new pg.Client({ connectionString: url })
  await c.connect()
  try {
    if (drop) await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
    await c.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`)
  } finally {
    await c.end()
  }
}

export async function backup(o: Target & { out: string; force?: boolean }): Promise<string> {
  const e = engineOf(o)
  const t0 = performance.now()
  if (e.kind === "postgres") {
    const scope = o.schema ? ["--schema", o.schema] : []
    await run("pg_dump", ["--format=custom", "--no-owner", "--file", o.out, ...scope, "--dbname", e.url])
    const what = o.schema ? `schema ${o.schema}` : "the database"
    return `backed up ${what} (PostgreSQL, pg_dump custom format) to ${o.out}: ${mb(statSync(o.out).size)} in ${secs(t0)}`
  }
  if (!existsSync(e.dir) || readdirSync(e.dir).length === 0) throw new CliError(`no PGlite data directory at ${e.dir}`)
  // PGlite writes postmaster.pid while open and removes it at close: a bridge (one process) holds it
  if (existsSync(join(e.dir, "postmaster.pid")) && !o.force)
    throw new CliError(
      `${e.dir} is open (a bridge runs on it, or one stopped without closing it): stop the bridge; --force if none runs`,
    )
  const db = await PGlite.create(e.dir)
  try {
    const dump = await db.dumpDataDir("gzip")
    await writeFile(o.out, Buffer.from(await dump.arrayBuffer()))
  } finally {
    await db.close()
  }
  return `backed up PGlite ${e.dir} (dumpDataDir, gzipped tar) to ${o.out}: ${mb(statSync(o.out).size)} in ${secs(t0)}`
}

export async function restore(o: Target & { from: string; force?: boolean }): Promise<string> {
  const e = engineOf(o)
  if (!existsSync(o.from)) throw usage(`--from: no such file ${o.from}`)
  const size = mb(statSync(o.from).size)
  const t0 = performance.now()
  if (e.kind === "postgres") {
    const what = o.schema ? `schema ${o.schema}` : "the database"
    const tables = await pgTables(e.url, o.schema)
    if (tables > 0 && !o.force)
      throw usage(`${what} is not empty (${nTables(tables)}): restore into an empty one, or --force`)
    if (o.schema) await pgEmptySchema(e.url, o.schema, tables > 0)
    const clean = tables > 0 && !o.schema ? ["--clean", "--if-exists"] : []
    const scope = o.schema ? ["--schema", o.schema] : []
    await run("pg_restore", [
      "--no-owner",
      "--exit-on-error",
      "--single-transaction",
      ...clean,
      ...scope,
      "--dbname",
      e.url,
      o.from,
    ])
    const restored = await pgTables(e.url, o.schema)
    if (restored === 0)
      throw new CliError(`${o.from} holds no tables for ${what} (was it taken with another --schema?)`)
    return `restored ${what} (PostgreSQL, ${nTables(restored)}) from ${o.from} (${size}) in ${secs(t0)}${tables > 0 ? `, replacing ${nTables(tables)}` : ""}`
  }
  const used = existsSync(e.dir) && readdirSync(e.dir).length > 0
  if (used && !o.force) throw usage(`${e.dir} is not empty: restore into an empty directory, or --force`)
  if (used) rmSync(e.dir, { recursive: true, force: true })
  mkdirSync(e.dir, { recursive: true })
  const db = await PGlite.create(e.dir, { loadDataDir: new Blob([await readFile(o.from)]) })
  await db.query("SELECT 1")
  await db.close()
  return `restored PGlite ${e.dir} from ${o.from} (${size}) in ${secs(t0)}${used ? ", replacing what was there" : ""}`
}

const DB_HELP = "the data tier: postgres://… or pglite:<dir> (PGlite: stop the bridge first)"

export function registerBackup(program: Command, print: (line: string) => void = console.log) {
  program
    .command("backup")
    .description("back up the data tier to one file: pg_dump's custom format, or PGlite's dump of its directory")
    .requiredOption("--database <url>", DB_HELP)
    .option("--schema <schema>", "PostgreSQL: only this schema (as the bridge's DATABASE_SCHEMA)")
    .requiredOption("--out <file>", "the backup file to write")
    .option("--force", "PGlite: back up a directory whose postmaster.pid says it is open (after a crash)")
    .action(async (o: Target & { out: string; force?: boolean }) => print(await backup(o)))
  program
    .command("restore")
    .description("restore a backup into an empty data tier (a database, schema or PGlite directory)")
    .requiredOption("--database <url>", DB_HELP)
    .option("--schema <schema>", "PostgreSQL: the schema the backup was taken of")
    .requiredOption("--from <file>", "the backup file (citymeter backup --out)")
    .option("--force", "replace what the target holds")
    .action(async (o: Target & { from: string; force?: boolean }) => print(await restore(o)))
}
