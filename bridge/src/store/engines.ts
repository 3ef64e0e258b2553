// Store engines: PostgreSQL through pg (DATABASE_URL=postgres://...) and embedded PGlite
// (DATABASE_URL=pglite:<dir> or pglite:memory). Same SQL, same contract suite.
import fs from "node:fs"
import { join } from "node:path"
import { Readable } from "node:stream"
import { pipeline } from "node:stream/promises"
import pg from "pg"
import { from as copyFromStdin } from "pg-copy-streams"
import { MIGRATION_LOCK_CLASS } from "./migrations.js"
import { SqlStore, type Db } from "./sql-store.js"
import type { Store } from "./store.js"

export interface StoreOptions {
  /** PostgreSQL schema to use (created if missing); tests use one per run. */
  schema?: string
  /**
   * PGlite on disk: sync to the disk as PostgreSQL does (the WAL at each commit, data files at
   * checkpoints). Default true; false only to measure what it costs (bench/ingest.ts).
   */
  durable?: boolean
}

/** A configuration mistake: retrying cannot help. */
export class StoreConfigError extends Error {}

const SCHEMA_PATTERN = /^[a-z_][a-z0-9_]{0,62}$/

function checkSchema(schema?: string) {
  if (schema !== undefined && !SCHEMA_PATTERN.test(schema)) throw new StoreConfigError(`invalid schema name ${schema}`)
}

// pg returns int8 as strings; our bigints are counters well below 2^53.
pg.types.setTypeParser(20, (v) => Number(v))

export async function openPostgres(url: string, opts: StoreOptions = {}): Promise<Store> {
  checkSchema(opts.schema)
  if (opts.schema) {
    const c = new pg.Client({ connectionString: url })
    await c.connect()
    try {
      // bridges starting together: CREATE SCHEMA IF NOT EXISTS alone races (a unique violation)
      await c.query(`SELECT pg_advisory_lock(${MIGRATION_LOCK_CLASS}, hashtext($1))`, [opts.schema])
      await c.query(`CREATE SCHEMA IF NOT EXISTS ${opts.schema}`)
    } finally {
      await c.end()
    }
  }
  const pool = new pg.Pool({
    connectionString: url,
    max: 8,
    options: opts.schema ? `-c search_path=${opts.schema}` : undefined,
  })
  // An idle client that loses its server emits 'error' on the pool; without a listener it crashes.
  pool.on("error", () => {})
  const copy = (client: pg.PoolClient, table: string, columns: readonly string[], text: string) =>
    pipeline(Readable.from([text]), client.query(copyFromStdin(`COPY ${table} (${columns.join(", ")}) FROM STDIN`)))
  const db: Db = {
    query: async (sql, params) => pool.query(sql, params as unknown[]) as never,
    copyFrom: async (table, columns, text) => {
      const client = await pool.connect()
      try {
        await copy(client, table, columns, text)
      } finally {
        client.release()
      }
    },
    transaction: async (fn) => {
      const client = await pool.connect()
      try {
        await client.query("BEGIN")
        const tx: Db = {
          query: async (sql, params) => client.query(sql, params as unknown[]) as never,
          copyFrom: (table, columns, text) => copy(client, table, columns, text),
          transaction: (f) => f(tx),
          close: async () => {},
        }
        const result = await fn(tx)
        await client.query("COMMIT")
        return result
      } catch (e) {
        await client.query("ROLLBACK").catch(() => {})
        throw e
      } finally {
        client.release()
      }
    },
    close: () => pool.end(),
  }
  const store = new SqlStore("postgres", db)
  await store.migrate()
  return store
}

export async function openPglite(dataDir: string | undefined, opts: StoreOptions = {}): Promise<Store> {
  checkSchema(opts.schema)
  const { PGlite } = await import("@electric-sql/pglite")
  const durable = dataDir !== undefined && opts.durable !== false
  if (dataDir) fs.mkdirSync(dataDir, { recursive: true })
  const lite = durable
    ? new PGlite({ fs: await syncingNodeFs(dataDir), startParams: syncingStartParams(PGlite.defaultStartParams) })
    : new PGlite(dataDir)
  await lite.waitReady
  // whatever an earlier run (or initdb) wrote without syncing reaches the disk before anything is acknowledged
  if (durable) syncTree(dataDir)
  if (opts.schema) {
    await lite.exec(`CREATE SCHEMA IF NOT EXISTS ${opts.schema}; SET search_path TO ${opts.schema}`)
  }
  const copy = (q: Pick<typeof lite, "query">, table: string, columns: readonly string[], text: string) =>
    q.query(`COPY ${table} (${columns.join(", ")}) FROM '/dev/blob'`, [], { blob: new Blob([text]) })
  // PGlite is one connection: queries are serialised by PGlite itself, transactions included.
  const db: Db = {
    query: async (sql, params) => lite.query(sql, params as unknown[]) as never,
    copyFrom: async (table, columns, text) => void (await copy(lite, table, columns, text)),
    transaction: (fn) =>
      lite.transaction(async (t) => {
        const tx: Db = {
          query: async (sql, params) => t.query(sql, params as unknown[]) as never,
          copyFrom: async (table, columns, text) => void (await copy(t, table, columns, text)),
          transaction: (f) => f(tx),
          close: async () => {},
        }
        return fn(tx)
      }) as never,
    close: () => lite.close(),
  }
  const store = new SqlStore("pglite", db)
  await store.migrate()
  return store
}

/*
 * A durable PGlite. PGlite runs PostgreSQL compiled to WebAssembly with Emscripten; on Node its
 * files are real files (NODEFS), but it starts PostgreSQL with fsync off (-F), and Emscripten's
 * fsync reaches NODEFS only through an optional stream_ops.fsync that NODEFS does not have
 * (fdatasync is a no-op outright): nothing it writes is ever synced (strace shows no fsync at all).
 * So: fsync on (no -F) with wal_sync_method=fsync (fdatasync goes nowhere), and NODEFS given the
 * stream_ops.fsync it lacks, a real fsync(2) of the file's descriptor. PostgreSQL's own rules then
 * apply unchanged: the WAL is synced before COMMIT returns (synchronous_commit is on), data files
 * and pg_control at checkpoints, directories after creating or renaming files in them.
 * tests/durable-pglite.test.ts observes the calls.
 */

/** PGlite's start parameters with fsync on and WAL syncs through fsync(2). */
export function syncingStartParams(defaults: string[]): string[] {
  return [...defaults.filter((p) => p !== "-F"), "-c", "wal_sync_method=fsync"]
}

interface EmscriptenNodeFs {
  NODEFS: { stream_ops: { fsync?: (stream: { nfd?: number }) => number } }
}

async function syncingNodeFs(dataDir: string) {
  const { NodeFS } = await import("@electric-sql/pglite/nodefs")
  class SyncingNodeFS extends NodeFS {
    override async init(...args: Parameters<InstanceType<typeof NodeFS>["init"]>) {
      const { emscriptenOpts } = await super.init(...args)
      const preRun = [emscriptenOpts.preRun ?? []].flat() as ((mod: unknown) => void)[]
      preRun.push((mod) => {
        ;(mod as EmscriptenNodeFs).NODEFS.stream_ops.fsync = (stream) => {
          // fs.fsyncSync throws on failure (EIO): PostgreSQL then stops (data_sync_retry off)
          if (stream.nfd !== undefined) fs.fsyncSync(stream.nfd)
          return 0
        }
      })
      return { emscriptenOpts: { ...emscriptenOpts, preRun } as typeof emscriptenOpts }
    }
  }
  return new SyncingNodeFS(dataDir)
}

/** fsync every file and directory under dir (what PostgreSQL does to a data directory it recovers). */
function syncTree(dir: string) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) syncTree(p)
    else if (e.isFile()) syncFile(p, "r")
  }
  syncFile(dir, "r")
}

function syncFile(path: string, flags: string) {
  const fd = fs.openSync(path, flags)
  try {
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}

/** postgres://… → PostgreSQL; pglite:<dir> → PGlite on disk; pglite:memory → PGlite in memory. */
export async function openStore(url: string, opts: StoreOptions = {}): Promise<Store> {
  if (/^postgres(ql)?:\/\//.test(url)) return openPostgres(url, opts)
  if (url.startsWith("pglite:")) {
    const dir = url.slice("pglite:".length)
    return openPglite(dir === "memory" || dir === "" ? undefined : dir, opts)
  }
  throw new StoreConfigError(`DATABASE_URL must start with postgres:// or pglite: (got ${url.split(":")[0]}:)`)
}
