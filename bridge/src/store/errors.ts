// Which data-tier failures are worth retrying. PostgreSQL and PGlite report SQLSTATE codes
// (PostgreSQL manual, appendix A "PostgreSQL Error Codes"); a failure without one comes from the
// connection (refused, reset, timed out, pool closed).

/** SQLSTATE classes meaning "the data tier is unavailable or busy", not "this row is wrong". */
const TRANSIENT_CLASSES = new Set([
  "08", // connection exception
  "40", // transaction rollback: serialization failure, deadlock
  "53", // insufficient resources: disk full, out of memory, too many connections
  "57", // operator intervention: admin shutdown, crash shutdown, cannot connect now
  "58", // system error: I/O error
  "XX", // internal error
])

const sqlState = (e: unknown): string | undefined => {
  const code = (e as { code?: unknown } | null)?.code
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : undefined
}

/**
 * True when retrying may succeed: the data tier is down, restarting, overloaded or lost the
 * connection. False when the database refused the statement for its content (a value out of
 * range, an invalid byte sequence, a constraint): the same statement fails again forever.
 */
export function isTransientStoreError(e: unknown): boolean {
  const state = sqlState(e)
  if (state === undefined) return true
  return TRANSIENT_CLASSES.has(state.slice(0, 2))
}

/** The SQLSTATE of a content error, for the dead letter's detail. */
export function storeErrorDetail(e: unknown): string {
  const state = sqlState(e)
  const message = e instanceof Error ? e.message : String(e)
  return state ? `${state}: ${message}` : message
}
