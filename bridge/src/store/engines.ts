// Store engines: PostgreSQL through pg (DATABASE_URL=postgres://...) and embedded PGlite
// (DATABASE_URL=pglite:<dir> or pglite:memory). Same SQL, same contract suite.
import { mkdirSync } from "node:fs"
import pg from "pg"
import { SqlStore, type Db } from "./sql-store.js"
import type { Store } from "./store.js"

export interface StoreOptions {
  /** PostgreSQL schema to use (created if missing); tests use one per run. */
  schema?: string
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
    await c.query(`CREATE SCHEMA IF NOT EXISTS ${opts.schema}`)
    await c.end()
  }
  const pool = new pg.Pool({
    connectionString: url,
    max: 8,
    options: opts.schema ? `-c search_path=${opts.schema}` : undefined,
  })
  // An idle client that loses its server emits 'error' on the pool; without a listener it crashes.
  pool.on("error", () => {})
  const db: Db = {
    query: async (sql, params) => pool.query(sql, params as unknown[]) as never,
    transaction: async (fn) => {
      const client = await pool.connect()
      try {
        await client.query("BEGIN")
        const tx: Db = {
          query: async (sql, params) => client.query(sql, params as unknown[]) as never,
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
  if (dataDir) mkdirSync(dataDir, { recursive: true })
  const lite = new PGlite(dataDir)
  await lite.waitReady
  if (opts.schema) {
    await lite.exec(`CREATE SCHEMA IF NOT EXISTS ${opts.schema}; SET search_path TO ${opts.schema}`)
  }
  // PGlite is one connection: queries are serialised by PGlite itself, transactions included.
  const db: Db = {
    query: async (sql, params) => lite.query(sql, params as unknown[]) as never,
    transaction: (fn) =>
      lite.transaction(async (t) => {
        const tx: Db = {
          query: async (sql, params) => t.query(sql, params as unknown[]) as never,
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

/** postgres://… → PostgreSQL; pglite:<dir> → PGlite on disk; pglite:memory → PGlite in memory. */
export async function openStore(url: string, opts: StoreOptions = {}): Promise<Store> {
  if (/^postgres(ql)?:\/\//.test(url)) return openPostgres(url, opts)
  if (url.startsWith("pglite:")) {
    const dir = url.slice("pglite:".length)
    return openPglite(dir === "memory" || dir === "" ? undefined : dir, opts)
  }
  throw new StoreConfigError(`DATABASE_URL must start with postgres:// or pglite: (got ${url.split(":")[0]}:)`)
}
