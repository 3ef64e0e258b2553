// Reads take turns with ingest on the data tier's time. While ingest keeps the data tier busy (its
// statements took 10 % or more of the last second), read statements may hold at most `sharePct`
// of the wall time: after a read of t ms the next waits t × (100 − share) / share, and reads go
// one after another. On PGlite (one connection) that is the connection's time; on PostgreSQL,
// whose reads have connections of their own, it is the CPU and I/O they take from ingest on a
// small machine. A bridge with little to ingest reads at full speed.
import { Transform, type Readable } from "node:stream"
import type { Db } from "./db.js"

/** Ingest counts as busy when its statements took this long within a one-second window. */
const BUSY_MS_PER_S = 100
const LONGEST_WAIT_MS = 10_000
/** A COPY's data flows this long at least before it pauses for its turn. */
const COPY_SLICE_MS = 50

export class ReadShare {
  private windowStart = -Infinity
  private busyThisWindow = 0
  private busyLastWindow = 0
  private lastReadEnd = -Infinity
  private lastReadMs = 0
  /** Settles when the newest read statement has ended. */
  private lastRead: Promise<void> = Promise.resolve()

  constructor(private readonly sharePct: number) {}

  /** The writer's connection: the time each statement and transaction takes is counted. */
  writes(db: Db): Db {
    const timed = async <T>(p: () => Promise<T>) => {
      const t0 = performance.now()
      try {
        return await p()
      } finally {
        this.rotate()
        this.busyThisWindow += performance.now() - t0
      }
    }
    return {
      ...db,
      query: (sql, params) => timed(() => db.query(sql, params)),
      copyFrom: (table, columns, text) => timed(() => db.copyFrom(table, columns, text)),
      transaction: (fn) => timed(() => db.transaction(fn)),
    }
  }

  /** The readers' connection, each statement after its turn. */
  reads(db: Db): Db {
    const rd: Db = {
      ...db,
      query: async (sql, params) => {
        // while ingest is busy, reads go one after another, each after its turn
        const previous = this.lastRead
        let done!: () => void
        this.lastRead = new Promise((r) => (done = r))
        try {
          if (this.ingestBusy()) {
            await previous
            await this.turn()
          }
          const t0 = performance.now()
          try {
            return await db.query(sql, params)
          } finally {
            this.lastReadEnd = performance.now()
            this.lastReadMs = this.lastReadEnd - t0
          }
        } finally {
          done()
        }
      },
      transaction: (f) => f(rd),
      // a long read's own connection: each of its statements takes its turn as well
      session:
        db.session &&
        (async () => {
          const s = await db.session!()
          return {
            ...this.reads(s),
            release: (err?: Error) => s.release(err),
            copyOut: s.copyOut && ((sql: string) => this.paced(s.copyOut!(sql))),
          }
        }),
    }
    return rd
  }

  /**
   * A COPY's data (one statement for a whole export file): while ingest is busy, after each slice
   * of ≥ 50 ms of flow it pauses for t × (100 − share) / share; the paused stream holds the engine
   * back (TCP back-pressure). The time between chunks counts as the engine's, a slow client's
   * included.
   */
  private paced(source: Readable): Readable {
    let sliceStart = performance.now()
    const out = new Transform({
      transform: (chunk: Buffer, _enc, done) => {
        const now = performance.now()
        const flowed = now - sliceStart
        if (flowed < COPY_SLICE_MS) return done(null, chunk)
        const share = Math.min(100, Math.max(1, this.sharePct)) / 100
        const wait = this.ingestBusy() ? Math.min((flowed * (1 - share)) / share, LONGEST_WAIT_MS) : 0
        const go = () => {
          sliceStart = performance.now()
          done(null, chunk)
        }
        if (wait > 0) setTimeout(go, wait)
        else go()
      },
    })
    source.on("error", (e) => out.destroy(e))
    out.on("close", () => source.destroy())
    return source.pipe(out)
  }

  /** Starts a new one-second window when the current one is over. */
  private rotate() {
    const now = performance.now()
    if (now - this.windowStart < 1000) return
    this.busyLastWindow = now - this.windowStart < 2000 ? this.busyThisWindow : 0
    this.busyThisWindow = 0
    this.windowStart = now
  }

  private ingestBusy() {
    this.rotate()
    return Math.max(this.busyThisWindow, this.busyLastWindow) >= BUSY_MS_PER_S
  }

  private async turn() {
    const now = performance.now()
    const share = Math.min(100, Math.max(1, this.sharePct)) / 100
    const wait = this.lastReadEnd + (this.lastReadMs * (1 - share)) / share - now
    if (wait > 0) await new Promise((r) => setTimeout(r, Math.min(wait, LONGEST_WAIT_MS)))
  }
}
