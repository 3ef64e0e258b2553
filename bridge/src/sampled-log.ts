// Logging of events that can come in floods (rejected frames, refused retained messages): per
// reason, the first event of an interval is logged at once with its fields (a sample), and the
// interval's total is logged when it ends, when there were more. At most two lines per reason and
// interval, however many events; the metrics still count every one.
import type { Logger } from "pino"

type Level = "warn" | "error"

export class SampledLog {
  private readonly counts = new Map<string, { n: number; level: Level }>()
  private timer: NodeJS.Timeout | undefined

  constructor(
    private readonly log: Logger,
    /** The message of every line: the sample's, and the interval's total (with ": N in S s"). */
    private readonly msg: string,
    private readonly intervalMs: number,
  ) {}

  /** One event of `reason`; `fields` are logged when it is the interval's sample. */
  note(reason: string, level: Level, fields: () => Record<string, unknown>) {
    const c = this.counts.get(reason)
    if (c) {
      c.n++
      return
    }
    this.counts.set(reason, { n: 1, level })
    this.log[level]({ ...fields(), reason }, this.msg)
    if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), this.intervalMs)
      this.timer.unref()
    }
  }

  /** Logs the totals of the interval so far (reasons with more than their sample) and starts a new one. */
  flush() {
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
    const intervalS = this.intervalMs / 1000
    for (const [reason, { n, level }] of this.counts)
      if (n > 1) this.log[level]({ reason, count: n, intervalS }, `${this.msg}: ${n} in ${intervalS} s`)
    this.counts.clear()
  }
}
