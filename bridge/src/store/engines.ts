// Store engines: PostgreSQL through pg (DATABASE_URL=postgres://...) and embedded PGlite
// (DATABASE_URL=pglite:<dir> or pglite:memory). Same SQL, same contract suite.
import { Readable } from "node:stream"
import { pipeline } from "node:stream/promises"
import pg from "pg"
import { from as copyFromStdin, to as copyToStdout } from "pg-copy-streams"
import { MIGRATION_LOCK_CLASS } from "./migrations.js"
import { runTransaction, type Db, type Session } from "./db.js"
import { SqlStore } from "./sql-store.js"
import type { Store } from "./store.js"
import { BRIDGE_DEFAULTS as D } from "../defaults.js"
import { PgliteThread } from "./pglite-thread.js"
import { ReadShare } from "./read-share.js"

export interface StoreOptions {
  /** PostgreSQL schema to use (created if missing); tests use one per run. */
  schema?: string
  /**
   * PGlite on disk: sync to the disk as PostgreSQL does (the WAL at each commit, data files at
   * checkpoints). Default true; false only to measure what it costs (bench/ingest.ts).
   */
  durable?: boolean
  /** Reads of the open API (BRIDGE_DEFAULTS.reads): their statement time and, on PostgreSQL, their pool. */
  reads?: { statementMs?: number; concurrency?: number; sharePct?: number; maxCost?: number }
  /** Tests: called with each path PGlite fsyncs (it syncs in its own thread). */
  onFsync?: (path: string) => void
  /** PGlite: called when its thread was stopped and the database reopened (why, and for how long, ms). */
  onRestart?: (why: string, ms: number) => void
}

/** A configuration mistake: retrying cannot help. */
export class StoreConfigError extends Error {}

const SCHEMA_PATTERN = /^[a-z_][a-z0-9_]{0,62}$/

function checkSchema(schema?: string) {
  if (schema !== undefined && !SCHEMA_PATTERN.test(schema)) throw new StoreConfigError(`invalid schema name ${schema}`)
}

// pg returns int8 as strings; our bigints are counters well below 2^53.
pg.types.setTypeParser(20, (v) => Number(v))

/** The engine's connection with its reads held to their share of the time while ingest writes (read-share.ts). */
function sharedWithIngest(db: Db, opts: StoreOptions): Db {
  if (!db.reads) return db
  const share = new ReadShare(opts.reads?.sharePct ?? D.reads.sharePct)
  return { ...share.writes(db), reads: share.reads(db.reads) }
}

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
  // The open API's reads: a pool of their own, so that they never hold ingest's connections, and a
  // statement timeout, so that none runs for long (SQLSTATE 57014, answered as CM_ERR_READ_BUDGET).
  const readPool = new pg.Pool({
    connectionString: url,
    max: opts.reads?.concurrency ?? D.reads.concurrency,
    options: [
      `-c statement_timeout=${Math.max(0, Math.floor(opts.reads?.statementMs ?? D.reads.statementMs))}`,
      ...(opts.schema ? [`-c search_path=${opts.schema}`] : []),
    ].join(" "),
  })
  // An idle client that loses its server emits 'error' on the pool; without a listener it crashes.
  pool.on("error", () => {})
  readPool.on("error", () => {})
  const reads: Db = {
    query: async (sql, params) => readPool.query(sql, params as unknown[]) as never,
    copyFrom: () => Promise.reject(new Error("reads do not write")),
    transaction: (f) => f(reads),
    close: async () => {},
    session: async () => {
      const client = await readPool.connect()
      const s: Session = {
        query: async (sql, params) => client.query(sql, params as unknown[]) as never,
        copyFrom: () => Promise.reject(new Error("reads do not write")),
        transaction: (f) => f(s),
        close: async () => {},
        release: (err) => client.release(err),
        copyOut: (sql) => client.query(copyToStdout(sql)),
      }
      return s
    },
  }
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
      // a connection lost between two statements (a long compaction step) fails the next one; without a
      // listener, pg would throw its 'error' as an uncaught exception. release() drops the dead client.
      const lost = () => {}
      client.on("error", lost)
      try {
        const tx: Db = {
          query: async (sql, params) => client.query(sql, params as unknown[]) as never,
          copyFrom: (table, columns, text) => copy(client, table, columns, text),
          transaction: (f) => f(tx),
          close: async () => {},
        }
        return await runTransaction(tx, fn)
      } finally {
        client.off("error", lost)
        client.release()
      }
    },
    close: async () => {
      await Promise.all([pool.end(), readPool.end()])
    },
    reads,
  }
  const store = new SqlStore("postgres", sharedWithIngest(db, opts))
  store.readMaxCost = opts.reads?.maxCost ?? D.reads.maxCost
  return migrated(store)
}

export async function openPglite(dataDir: string | undefined, opts: StoreOptions = {}): Promise<Store> {
  checkSchema(opts.schema)
  const thread = await PgliteThread.start({
    dataDir,
    durable: dataDir !== undefined && opts.durable !== false,
    schema: opts.schema,
    readStatementMs: opts.reads?.statementMs ?? D.reads.statementMs,
    reportFsync: opts.onFsync !== undefined,
  })
  thread.onFsync = opts.onFsync
  thread.onRestart = opts.onRestart
  const store = new SqlStore("pglite", sharedWithIngest(thread.db(), opts))
  store.readMaxCost = opts.reads?.maxCost ?? D.reads.maxCost
  return migrated(store)
}

/** The store with its schema brought up to date; closed when that fails (a retry opens another). */
async function migrated(store: SqlStore): Promise<Store> {
  try {
    await store.migrate()
  } catch (e) {
    await store.close().catch(() => {})
    throw e
  }
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
