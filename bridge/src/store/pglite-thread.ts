// The embedded engine's connection: PGlite in a worker thread (pglite-worker.ts), so that no
// statement, however long, freezes the broker, ingest or HTTP in the main thread. PGlite is one
// connection: statements run one at a time, in the order they were asked for, and a transaction
// holds the connection from BEGIN to COMMIT. Reads (the open API) go one at a time on top of that,
// so an ingest commit waits behind at most one read statement; a read past its time budget stops
// the thread, which starts again on the same directory (PGlite has no working statement_timeout;
// PostgreSQL recovers the directory from its WAL as after a crash).
import { readFile } from "node:fs/promises"
import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import { Worker } from "node:worker_threads"
import { runTransaction, type Db } from "./db.js"

export interface WorkerConfig {
  /** Undefined: in memory (such a database cannot be reopened: its reads have no time limit). */
  dataDir?: string
  durable: boolean
  schema?: string
  /** Tests: each fsync'd path is sent to the main thread (PgliteThread.onFsync). */
  reportFsync?: boolean
  /** Started again after a stop of our own: what it wrote is in the OS already, synced at each commit. */
  reopen?: boolean
  /** PGlite's WebAssembly, compiled once per process (a thread started again skips the compile). */
  modules?: { pgliteWasmModule: WebAssembly.Module; initdbWasmModule: WebAssembly.Module }
}

let compiled: Promise<NonNullable<WorkerConfig["modules"]>> | undefined

/** Compiles PGlite's two WebAssembly modules once; every thread of this process gets them. */
function compileModules() {
  const dist = dirname(createRequire(import.meta.url).resolve("@electric-sql/pglite"))
  const compile = async (name: string) => WebAssembly.compile(await readFile(join(dist, name)))
  compiled ??= (async () => ({
    pgliteWasmModule: await compile("pglite.wasm"),
    initdbWasmModule: await compile("initdb.wasm"),
  }))()
  return compiled
}

/** What the worker is asked to do; each request carries an id its answer repeats. */
export type Request =
  | { op: "query"; sql: string; params?: unknown[] }
  | { op: "copy"; table: string; columns: readonly string[]; text: string }
  | { op: "close" }

export type ToWorker = Request & { id: number }

export interface WireError {
  message: string
  code?: string
  detail?: string
  hint?: string
  severity?: string
  constraint?: string
  table?: string
  column?: string
  schema?: string
}

export type FromWorker =
  | { ready: true }
  | { failed: WireError }
  | { fsync: string }
  | { id: number; rows: unknown[] }
  | { id: number; error: WireError }

/** A read stopped at its time budget: SQLSTATE 57014 (query_canceled), as PostgreSQL's statement_timeout. */
export class ReadTimeoutError extends Error {
  readonly code = "57014"
  constructor(readonly ms: number) {
    super(`canceling statement due to statement timeout (${ms} ms)`)
  }
}

const ENTRY = new URL(
  import.meta.url.endsWith(".ts") ? "./pglite-worker-entry.mjs" : "./pglite-worker.js",
  import.meta.url,
)

const toError = (w: WireError) => Object.assign(new Error(w.message), w)

/** FIFO mutual exclusion. */
class Turns {
  private tail: Promise<unknown> = Promise.resolve()
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn)
    this.tail = next.catch(() => {})
    return next
  }
}

export interface PgliteThreadOptions extends WorkerConfig {
  /** The longest a read statement may run, ms; 0: no limit. Ignored in memory. */
  readStatementMs?: number
}

export class PgliteThread {
  private worker!: Worker
  private nextId = 1
  private readonly pending = new Map<number, { resolve(rows: unknown[]): void; reject(e: Error): void }>()
  /** The connection: one statement or transaction at a time. */
  private readonly connection = new Turns()
  /** Reads: one at a time, each then waiting for the connection. */
  private readonly reads = new Turns()
  private closed = false
  /** Why the thread stopped on its own (out of memory, a crash): the next call starts it again (on disk). */
  private broken?: Error
  onFsync?: (path: string) => void
  /** Called after each restart with why and how long the database was away, ms. */
  onRestart?: (why: string, ms: number) => void

  private constructor(private readonly o: PgliteThreadOptions) {}

  static async start(o: PgliteThreadOptions): Promise<PgliteThread> {
    const t = new PgliteThread(o)
    await t.spawn()
    return t
  }

  private async spawn(reopen = false): Promise<void> {
    const config: WorkerConfig = {
      dataDir: this.o.dataDir,
      durable: this.o.durable,
      schema: this.o.schema,
      reopen,
      modules: await compileModules(),
    }
    if (this.o.reportFsync) config.reportFsync = true
    // execArgv []: the entry registers tsx itself
    const w = new Worker(ENTRY, { workerData: config, execArgv: [] })
    this.worker = w
    return new Promise<void>((resolve, reject) => {
      w.on("message", (m: FromWorker) => {
        if ("ready" in m) resolve()
        else if ("failed" in m) reject(toError(m.failed))
        else if ("fsync" in m) this.onFsync?.(m.fsync)
        else {
          const p = this.pending.get(m.id)
          this.pending.delete(m.id)
          if ("error" in m) p?.reject(toError(m.error))
          else p?.resolve(m.rows)
        }
      })
      w.on("error", (e) => {
        reject(e)
        this.failAll(e)
      })
      w.on("exit", (code) => {
        const e = new Error(`the embedded database's thread exited (code ${code})`)
        reject(e)
        if (this.worker !== w || this.closed) return
        this.broken = e
        this.failAll(e)
      })
    })
  }

  private failAll(e: Error) {
    for (const p of this.pending.values()) p.reject(e)
    this.pending.clear()
  }

  private async call(msg: Request): Promise<unknown[]> {
    if (this.closed) throw new Error("the embedded database is closed")
    if (this.broken) {
      // in memory there is nothing to reopen: every call fails as the thread did
      if (!this.o.dataDir) throw this.broken
      const why = this.broken.message
      this.broken = undefined
      await this.reopen(why, performance.now())
    }
    const id = this.nextId++
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject })
      this.worker.postMessage({ ...msg, id })
    })
  }

  /** A read statement under its time budget: past it, the thread is stopped and started again. */
  private async timedRead(sql: string, params?: unknown[]): Promise<unknown[]> {
    const ms = this.o.dataDir ? (this.o.readStatementMs ?? 0) : 0
    if (!ms) return this.call({ op: "query", sql, params })
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ReadTimeoutError(ms)), ms)
    })
    try {
      return await Promise.race([this.call({ op: "query", sql, params }), timedOut])
    } catch (e) {
      if (e instanceof ReadTimeoutError) await this.restart()
      throw e
    } finally {
      clearTimeout(timer)
    }
  }

  private async restart() {
    const t0 = performance.now()
    const old = this.worker
    this.worker = undefined as unknown as Worker // its exit is expected
    await old.terminate()
    this.failAll(new Error("the embedded database's thread was restarted"))
    await this.reopen("a read ran past READ_STATEMENT_MS", t0)
  }

  /** Starts the thread again on the same directory; onRestart hears why and how long it was away since t0. */
  private async reopen(why: string, t0: number) {
    await this.spawn(true)
    this.onRestart?.(why, performance.now() - t0)
  }

  /** The connection as the store uses it: ingest, maintenance, tools. */
  db(): Db {
    // inside a turn of the connection: statements go straight to the thread
    const inTx: Db = {
      query: async (sql, params) => ({ rows: (await this.call({ op: "query", sql, params })) as never }),
      copyFrom: async (table, columns, text) => void (await this.call({ op: "copy", table, columns, text })),
      transaction: (f) => f(inTx),
      close: async () => {},
    }
    return {
      query: (sql, params) => this.connection.run(() => inTx.query(sql, params)),
      copyFrom: (table, columns, text) => this.connection.run(() => inTx.copyFrom(table, columns, text)),
      transaction: (fn) => this.connection.run(() => runTransaction(inTx, fn)),
      close: () => this.close(),
      reads: this.readDb(),
    }
  }

  /** The connection as the open API reads it: one read at a time, each under its time budget. */
  private readDb(): Db {
    const rd: Db = {
      query: (sql, params) =>
        this.reads.run(() => this.connection.run(async () => ({ rows: (await this.timedRead(sql, params)) as never }))),
      copyFrom: () => Promise.reject(new Error("reads do not write")),
      transaction: (f) => f(rd),
      close: async () => {},
    }
    return rd
  }

  async close() {
    if (this.closed) return
    await this.connection.run(() => this.call({ op: "close" })).catch(() => {})
    this.closed = true
    await this.worker.terminate()
  }
}
