// Reads take turns with ingest on the data tier's time. While ingest has written within the last
// second, read statements may hold at most `sharePct` of the wall time: after a read of t ms the
// next waits t × (100 − share) / share. On PGlite (one connection) that is the connection's time;
// on PostgreSQL, whose reads have connections of their own, it is the CPU and I/O they take from
// ingest on a small machine. An idle bridge reads at full speed.
import type { Db } from "./db.js"

const RECENT_WRITE_MS = 1000
const LONGEST_WAIT_MS = 10_000

export class ReadShare {
  private lastWriteEnd = -Infinity
  private lastReadEnd = -Infinity
  private lastReadMs = 0
  /** Settles when the newest read statement has ended. */
  private lastRead: Promise<void> = Promise.resolve()

  constructor(private readonly sharePct: number) {}

  /** The writer's connection, each statement and transaction noted as a write when it ends. */
  writes(db: Db): Db {
    const noted = <T>(p: Promise<T>) => p.finally(() => (this.lastWriteEnd = performance.now()))
    return {
      ...db,
      query: (sql, params) => noted(db.query(sql, params)),
      copyFrom: (table, columns, text) => noted(db.copyFrom(table, columns, text)),
      transaction: (fn) => noted(db.transaction(fn)),
    }
  }

  /** The readers' connection, each statement after its turn. */
  reads(db: Db): Db {
    const rd: Db = {
      ...db,
      query: async (sql, params) => {
        // while ingest writes, reads go one after another, each after its turn
        const previous = this.lastRead
        let done!: () => void
        this.lastRead = new Promise((r) => (done = r))
        try {
          if (this.writing()) {
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
    }
    return rd
  }

  private writing() {
    return performance.now() - this.lastWriteEnd <= RECENT_WRITE_MS
  }

  private async turn() {
    const now = performance.now()
    const share = Math.min(100, Math.max(1, this.sharePct)) / 100
    const wait = this.lastReadEnd + (this.lastReadMs * (1 - share)) / share - now
    if (wait > 0) await new Promise((r) => setTimeout(r, Math.min(wait, LONGEST_WAIT_MS)))
  }
}
