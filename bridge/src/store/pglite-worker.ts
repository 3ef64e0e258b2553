// The worker thread that owns an embedded PGlite (pglite-thread.ts starts it). PGlite runs
// PostgreSQL compiled to WebAssembly, and a statement runs synchronously: in the main thread a
// 10-second read would freeze the broker, ingest and HTTP with it. Here it freezes only this
// thread, which the main thread can stop (a read past READ_STATEMENT_MS: PGlite has no working
// statement_timeout) and start again on the same directory.
import fs from "node:fs"
import { join } from "node:path"
import { parentPort, workerData } from "node:worker_threads"
import type { ToWorker, FromWorker, WorkerConfig, WireError } from "./pglite-thread.js"

const config = workerData as WorkerConfig

/*
 * A durable PGlite. On Node its files are real files (NODEFS), but it starts PostgreSQL with fsync
 * off (-F), and Emscripten's fsync reaches NODEFS only through an optional stream_ops.fsync that
 * NODEFS does not have (fdatasync is a no-op outright): nothing it writes is ever synced (strace
 * shows no fsync at all). So: fsync on (no -F) with wal_sync_method=fsync (fdatasync goes nowhere),
 * and NODEFS given the stream_ops.fsync it lacks, a real fsync(2) of the file's descriptor.
 * PostgreSQL's own rules then apply unchanged: the WAL is synced before COMMIT returns
 * (synchronous_commit is on), data files and pg_control at checkpoints. tests/system/durable-pglite.test.ts
 * observes the calls (config.reportFsync sends each synced path to the main thread).
 */

/** PGlite's start parameters with fsync on and WAL syncs through fsync(2). */
export function syncingStartParams(defaults: string[]): string[] {
  return [...defaults.filter((p) => p !== "-F"), "-c", "wal_sync_method=fsync"]
}

interface EmscriptenNodeFs {
  NODEFS: { stream_ops: { fsync?: (stream: { nfd?: number }) => number } }
}

// fs.fsyncSync throws on failure (EIO): PostgreSQL then stops (data_sync_retry off)
const fsyncFd = (fd: number) => fs.fsyncSync(fd)

/** Tests: every fsync this thread makes through node:fs (ours or PGlite's own) is reported. */
function reportFsyncs() {
  const real = fs.fsyncSync
  fs.fsyncSync = (fd: number) => {
    real(fd)
    post({ fsync: fs.readlinkSync(`/proc/self/fd/${fd}`) })
  }
}

async function syncingNodeFs(dataDir: string) {
  const { NodeFS } = await import("@electric-sql/pglite/nodefs")
  class SyncingNodeFS extends NodeFS {
    override async init(...args: Parameters<InstanceType<typeof NodeFS>["init"]>) {
      const { emscriptenOpts } = await super.init(...args)
      const preRun = [emscriptenOpts.preRun ?? []].flat() as ((mod: unknown) => void)[]
      preRun.push((mod) => {
        ;(mod as EmscriptenNodeFs).NODEFS.stream_ops.fsync = (stream) => {
          if (stream.nfd !== undefined) fsyncFd(stream.nfd)
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
    else if (e.isFile()) syncFile(p)
  }
  syncFile(dir)
}

function syncFile(path: string) {
  const fd = fs.openSync(path, "r")
  try {
    fsyncFd(fd)
  } finally {
    fs.closeSync(fd)
  }
}

const post = (m: FromWorker) => parentPort!.postMessage(m)

/** A database error as plain data: its SQLSTATE and fields survive the trip to the main thread. */
function wireError(e: unknown): WireError {
  const o = (e ?? {}) as Record<string, unknown>
  const out: WireError = { message: e instanceof Error ? e.message : String(e) }
  for (const k of ["code", "detail", "hint", "severity", "constraint", "table", "column", "schema"] as const)
    if (typeof o[k] === "string") out[k] = o[k]
  return out
}

async function main() {
  const { PGlite } = await import("@electric-sql/pglite")
  const { dataDir, durable } = config
  if (config.reportFsync) reportFsyncs()
  if (dataDir) fs.mkdirSync(dataDir, { recursive: true })
  const lite = durable
    ? new PGlite({
        ...config.modules,
        fs: await syncingNodeFs(dataDir!),
        startParams: syncingStartParams(PGlite.defaultStartParams),
      })
    : new PGlite({ ...config.modules, dataDir })
  await lite.waitReady
  // whatever an earlier run (or initdb) wrote without syncing reaches the disk before anything is acknowledged
  if (durable && !config.reopen) syncTree(dataDir!)
  if (config.schema)
    await lite.exec(`CREATE SCHEMA IF NOT EXISTS ${config.schema}; SET search_path TO ${config.schema}`)
  parentPort!.on("message", (m: ToWorker) => {
    const run = async () => {
      switch (m.op) {
        case "query":
          return (await lite.query(m.sql, m.params)).rows
        case "copy":
          await lite.query(`COPY ${m.table} (${m.columns.join(", ")}) FROM '/dev/blob'`, [], {
            blob: new Blob([m.text]),
          })
          return []
        case "close":
          await lite.close()
          return []
      }
    }
    run().then(
      (rows) => post({ id: m.id, rows }),
      (e: unknown) => post({ id: m.id, error: wireError(e) }),
    )
  })
  post({ ready: true })
}

main().catch((e: unknown) => post({ failed: wireError(e) }))
