// The bridge's one retry loop: a data-tier operation tried again, with a growing delay, for as
// long as its failure may pass with time (the data tier down, restarting, overloaded). Ingest
// (Ingest.durable) and the service's start (the store it opens) use it.
import { setTimeout as sleep } from "node:timers/promises"
import { BRIDGE_DEFAULTS } from "./defaults.js"

export interface RetryOptions {
  /** True when this failure may pass with time; any other is thrown at once. */
  retryable: (e: unknown) => boolean
  /** Each failure that will be tried again, before the delay (log it, count it). Attempts count from 0. */
  onRetry?: (e: unknown, attempt: number) => void
  /** The first delay, ms; the n-th is n times as long, up to maxMs. */
  baseMs?: number
  maxMs?: number
}

/** The delay after the attempt numbered `attempt` (from 0) fails. */
export const retryDelayMs = (attempt: number, baseMs: number, maxMs: number) => Math.min(maxMs, baseMs * (attempt + 1))

/** Runs op until it succeeds or fails with an error that is not retryable (thrown as it is). */
export async function retry<T>(op: () => Promise<T>, o: RetryOptions): Promise<T> {
  const baseMs = o.baseMs ?? BRIDGE_DEFAULTS.retryMs
  const maxMs = o.maxMs ?? BRIDGE_DEFAULTS.retryMaxMs
  for (let attempt = 0; ; attempt++) {
    try {
      return await op()
    } catch (e) {
      if (!o.retryable(e)) throw e
      o.onRetry?.(e, attempt)
      await sleep(retryDelayMs(attempt, baseMs, maxMs))
    }
  }
}
