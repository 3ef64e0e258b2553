// The handle every store module runs its SQL on. Both engines provide it (store/engines.ts,
// store/pglite-thread.ts); the modules that write or read take a Db, never an engine.
import type { Readable } from "node:stream"

/** The part of a PostgreSQL client both engines provide. */
export interface Db {
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<{ rows: T[] }>
  /** Runs fn in one transaction on one connection; commits when it resolves. */
  transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T>
  /**
   * COPY table (columns) FROM STDIN of rows in the text format (store/writes.ts copyText): bulk
   * rows at about three times the rate of an INSERT of unnested arrays.
   */
  copyFrom(table: string, columns: readonly string[], text: string): Promise<void>
  close(): Promise<void>
  /**
   * Where the open API's reads go, apart from ingest (BRIDGE_DEFAULTS.reads): PostgreSQL, a pool of
   * its own under a statement timeout; PGlite, one read statement at a time under a time budget.
   * Absent: the same connection.
   */
  reads?: Db
  /**
   * A connection of its own for one long read (the export's cursor, store/export-rows.ts), given
   * back by release (with an error: closed instead). Absent on PGlite, whose one connection a
   * long read would take from ingest.
   */
  session?(): Promise<Session>
}

/** A connection held by one reader until release. */
export interface Session extends Db {
  release(err?: Error): void
  /**
   * `COPY … TO STDOUT` (PostgreSQL): its data as it arrives, held back by the consumer (TCP
   * back-pressure holds the engine). Until the stream ends, the connection can do nothing else.
   */
  copyOut?(sql: string): Readable
}

/** BEGIN, fn, COMMIT on one connection; ROLLBACK when fn or the commit fails. */
export async function runTransaction<T>(tx: Db, fn: (tx: Db) => Promise<T>): Promise<T> {
  await tx.query("BEGIN")
  try {
    const result = await fn(tx)
    await tx.query("COMMIT")
    return result
  } catch (e) {
    await tx.query("ROLLBACK").catch(() => {})
    throw e
  }
}

/**
 * A statement's parameters, numbered as they are added: the SQL text names each by the
 * placeholder add returns, so a fragment never assumes its parameters' positions.
 */
export class Params {
  readonly values: unknown[] = []

  /** Adds a value; returns its placeholder ($n). */
  add(value: unknown): string {
    this.values.push(value)
    return `$${this.values.length}`
  }

  /**
   * A placeholder added on first use only: PostgreSQL rejects a parameter the statement never
   * uses when it cannot infer its type.
   */
  lazy(value: unknown): () => string {
    let placeholder: string | undefined
    return () => (placeholder ??= this.add(value))
  }
}

/** SQLSTATE 54001 statement_too_complex: a read the planner costs above READ_MAX_COST, refused unrun. */
export class ReadCostError extends Error {
  readonly code = "54001"
  constructor(
    readonly cost: number,
    readonly limit: number,
  ) {
    super(
      `the data tier estimates this read at ${Math.round(cost).toLocaleString("en-US")}, over READ_MAX_COST ` +
        `${limit.toLocaleString("en-US")}: narrow the $filter (one Datastream, a phenomenonTime range), or leave out ` +
        `$count and $orderby over a large set`,
    )
  }
}

/** The planner's total cost of a statement (EXPLAIN, not run). */
export async function planCost(db: Db, sql: string, params: unknown[]): Promise<number> {
  const { rows } = await db.query<{ "QUERY PLAN": unknown }>(`EXPLAIN (FORMAT JSON) ${sql}`, params)
  const raw = rows[0]["QUERY PLAN"]
  const plan = (typeof raw === "string" ? JSON.parse(raw) : raw) as { Plan: { "Total Cost": number } }[]
  return plan[0].Plan["Total Cost"]
}
