// Inactivity: a meter that misses its expected frames (2 × interval_s × batch from its birth
// config, plus slack) is marked offline with an INACTIVE alarm; ingest clears it when frames
// return. The marking is one SQL statement per check, so several bridge instances checking the
// same data tier raise each alarm once. The check also refreshes the online-meters gauge.
import type { Logger } from "pino"
import type { LiveBus } from "./live.js"
import type { Metrics } from "./metrics.js"
import { startPeriodic } from "./periodic.js"
import type { Store } from "./store/store.js"

export interface InactivityOptions {
  store: Store
  metrics: Metrics
  log: Logger
  /** How often to check, ms. */
  everyMs: number
  /** Grace beyond 2 × interval × batch, seconds (network, broker, clock jitter). */
  slackS: number
  /** Open dashboards hear of the meters marked offline (live.ts). */
  live?: LiveBus
}

export interface InactivityChecker {
  stop(): Promise<void>
}

export function startInactivityChecker(o: InactivityOptions): InactivityChecker {
  const check = async () => {
    const marked = await o.store.checkInactivity(new Date(), o.slackS)
    for (const meterId of marked) o.log.warn({ meterId, alarm: "INACTIVE" }, "meter missed its frames; marked offline")
    const at = new Date()
    o.live?.publish(
      marked.flatMap((meterId) => [
        { kind: "meter", meter: { meterId, online: false, inactive: true } } as const,
        {
          kind: "alarm",
          alarm: { meterId, boot: 0, seq: 0, type: "INACTIVE", active: true, ts: at, value: 0, source: "bridge" },
        } as const,
      ]),
    )
    o.metrics.onlineMeters.set(await o.store.countOnline())
    return marked
  }
  return startPeriodic(
    () =>
      check().catch((e: Error) => {
        o.log.error({ err: e.message }, "inactivity check failed")
        return []
      }),
    o.everyMs,
  )
}
