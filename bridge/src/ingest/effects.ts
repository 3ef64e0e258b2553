// After the commit: what a committed batch's frames cause outside the transaction: counts, logs,
// downlinks (acks, time), and live events for dashboards and the NGSI-LD forwarder (live.ts).
import type { Logger } from "pino"
import { encodeDownlink } from "../codec/downlink.js"
import type { ReadingsFrame } from "../codec/frames.js"
import type { citymeter } from "../gen/citymeter.js"
import type { LiveBus, LiveEvent } from "../live.js"
import type { Metrics } from "../metrics.js"
import type { SampledLog } from "../sampled-log.js"
import type { DownKind } from "../topics.js"
import type { BatchEntry, IngestOutcome } from "./batch.js"
import { clockSkewMs } from "./rules.js"

export type SendDownlink = (meterId: string, kind: DownKind, payload: Uint8Array) => Promise<void>

const CLOCK_CORRECTION_EVERY_MS = 60_000

/** What a batch's frames came to, counted into the metrics at once. */
class Tally {
  stored = new Map<string, number>()
  rejected = new Map<string, number>()
  duplicates = 0
  readings = 0
  /** citymeter_ingest_lag_seconds of each stored readings frame. */
  lags: number[] = []
  count(m: Map<string, number>, key: string) {
    m.set(key, (m.get(key) ?? 0) + 1)
  }
}

export class AfterCommit {
  private lastCorrection = new Map<string, number>()
  /** Sealed meters' keys in force, from their registry rows, for sealing downlinks. */
  private downlinkKeys = new Map<string, Uint8Array | null>()
  /** Debug logging on: per-frame debug lines are built only then. */
  private readonly debug: boolean

  constructor(
    private readonly send: SendDownlink,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    /** "frame rejected": a sample and a count per reason and interval, not a line per frame (a flood). */
    private readonly rejectLog: SampledLog,
    private readonly live: LiveBus | undefined,
  ) {
    this.debug = log.isLevelEnabled("debug")
  }

  /** Settles a committed batch in arrival order; returns each frame's outcome. */
  settleBatch(entries: BatchEntry[]): IngestOutcome[] {
    const tally = new Tally()
    const live: LiveEvent[] | undefined = this.live?.listening ? [] : undefined
    const outcomes: IngestOutcome[] = new Array(entries.length)
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i]
      try {
        outcomes[i] = this.settle(entry, tally)
        if (live) liveEvents(entry, live)
      } catch (e) {
        this.log.error({ err: e as Error, meterId: entry.meterId }, "settling a committed frame failed")
        outcomes[i] = entry.error?.code ?? "stored"
      }
    }
    // counters move once per batch and label, not once per frame
    for (const [kind, n] of tally.stored) this.metrics.framesStored.inc({ kind }, n)
    for (const [reason, n] of tally.rejected) this.metrics.framesRejected.inc({ reason }, n)
    if (tally.duplicates) this.metrics.framesDuplicate.inc(tally.duplicates)
    if (tally.readings) this.metrics.readingsStored.inc(tally.readings)
    if (live) this.live!.publish(live)
    if (tally.lags.length) for (const lag of tally.lags) this.metrics.ingestLag.observe(lag)
    return outcomes
  }

  /** Counts, logs and downlinks of one frame. */
  private settle(entry: BatchEntry, tally: Tally): IngestOutcome {
    const { meterId } = entry
    if (meterId !== null && entry.frame) this.downlinkKeys.set(meterId, entry.downlinkKey)
    if (entry.keyConfirmed) this.log.info({ meterId }, "key rotation confirmed by the meter")
    if (entry.activated) this.log.info({ meterId }, "meter active again; INACTIVE alarm cleared")
    if (entry.bug) this.log.error({ err: entry.bug, meterId }, "ingest failed on this frame")
    let outcome: IngestOutcome
    if (entry.error) {
      outcome = entry.error.code
      tally.count(tally.rejected, outcome)
      const error = entry.error
      this.rejectLog.note(outcome, outcome === "CM_ERR_STORE_REFUSED" ? "error" : "warn", () => ({
        topic: entry.arrival.topic,
        meterId,
        detail: error.message,
        bytes: entry.arrival.payload.length,
      }))
      if (entry.conflictAlarm)
        this.log.warn({ meterId, boot: entry.ack?.boot, seq: entry.ack?.seq }, "FRAME_CONFLICT alarm raised")
    } else outcome = entry.claim?.kind === "duplicate" ? "duplicate" : "stored"
    const f = entry.frame
    if (!entry.error && f) {
      if (entry.claim?.kind === "duplicate") tally.duplicates++
      else tally.count(tally.stored, f.kind)
      switch (f.kind) {
        case "readings":
          if (entry.claim?.kind === "stored" && entry.rows?.length) {
            tally.readings += entry.rows.length
            const last = entry.rows[entry.rows.length - 1]
            tally.lags.push(Math.max(0, (Date.now() - last.ts.getTime()) / 1000 - last.intervalS))
          }
          if (this.debug) this.log.debug({ meterId, boot: f.boot, seq: f.seq, outcome }, "readings frame")
          break
        case "birth":
          if (entry.previousBoot !== undefined) {
            this.metrics.bootRegressions.inc()
            this.log.warn(
              { meterId, boot: f.boot, previousBoot: entry.previousBoot },
              "new life: boot counter went back or jumped ahead (re-flash or settings wipe?)",
            )
          }
          this.log.info({ meterId, boot: f.boot, firmware: f.firmware, queued: f.queued }, "meter birth")
          if (f.unstored > 0)
            this.log.warn(
              { meterId, boot: f.boot, unstored: f.unstored },
              "meter's flash store is full: it refused writes, frames are in its RAM only",
            )
          void this.downlink(
            meterId!,
            "time",
            this.encode(meterId!, { time: { unixMs: Date.now(), uptimeS: f.uptimeS } }),
          )
          break
        case "death":
          this.log.info({ meterId, boot: f.boot }, "meter death")
          break
      }
    }
    if (entry.ack && meterId !== null)
      void this.downlink(meterId, "ack", this.encode(meterId, { ack: entry.ack }, entry.downlinkKey))
    if (f?.kind === "readings" && (!entry.error || entry.error.code === "CM_ERR_CONFLICT"))
      this.correctClock(meterId!, f, entry.arrival.at)
    return outcome
  }

  /** Pushes a TimeSync to a meter whose synced frames arrive with a skewed clock (at most once a minute). */
  private correctClock(meterId: string, f: ReadingsFrame, at: Date) {
    const skewMs = clockSkewMs(f, at)
    if (skewMs === undefined) return
    const last = this.lastCorrection.get(meterId) ?? 0
    if (at.getTime() - last < CLOCK_CORRECTION_EVERY_MS) return
    this.lastCorrection.set(meterId, at.getTime())
    this.metrics.clockCorrections.inc()
    this.log.warn({ meterId, skewMs }, "meter clock skewed; sending time")
    void this.downlink(meterId, "time", this.encode(meterId, { time: { unixMs: Date.now() } }))
  }

  /** A downlink for the meter, sealed under its key when its policy is sealed. */
  private encode(meterId: string, d: citymeter.v1.Downlink.$Properties, key = this.downlinkKeys.get(meterId)) {
    return encodeDownlink(d, key ?? undefined)
  }

  /**
   * Downlinks are queued, not awaited. They are best effort: a lost ack makes the meter resend,
   * and the resend is deduplicated.
   */
  private async downlink(meterId: string, kind: DownKind, payload: Uint8Array) {
    this.send(meterId, kind, payload).then(
      () => this.metrics.downlinks.inc({ kind, outcome: "sent" }),
      (e: Error) => {
        this.metrics.downlinks.inc({ kind, outcome: "failed" })
        this.log.warn({ meterId, kind, err: e.message }, "downlink failed")
      },
    )
  }
}

/** What a committed frame changed, for open dashboards and the forwarder (live.ts). */
function liveEvents(entry: BatchEntry, out: LiveEvent[]) {
  const meterId = entry.meterId
  const f = entry.frame
  if (meterId === null || !f || entry.claim?.kind === "duplicate") return
  const at = entry.arrival.at
  const bridgeAlarm = (type: "INACTIVE" | "FRAME_CONFLICT", active: boolean): LiveEvent => ({
    kind: "alarm",
    alarm: { meterId, boot: 0, seq: 0, type, active, ts: at, value: 0, source: "bridge" },
  })
  if (entry.activated) {
    out.push({ kind: "meter", meter: { meterId, online: true, inactive: false } })
    out.push(bridgeAlarm("INACTIVE", false))
  }
  if (entry.conflictAlarm) out.push(bridgeAlarm("FRAME_CONFLICT", true))
  if (entry.error) return
  switch (f.kind) {
    case "readings":
      if (entry.rows?.length) out.push({ kind: "reading", meterId, reading: entry.rows[entry.rows.length - 1] })
      out.push({ kind: "meter", meter: { meterId, lastSeen: at } })
      break
    case "alarm":
      if (entry.event) out.push({ kind: "alarm", alarm: { ...entry.event, source: "meter" } })
      out.push({ kind: "meter", meter: { meterId, lastSeen: at } })
      break
    case "birth": {
      const { firmware, board, boot, queued, dropped } = f
      out.push({
        kind: "meter",
        meter: { meterId, online: true, lastSeen: at, firmware, board, boot, queued, dropped },
      })
      break
    }
    case "death":
      out.push({ kind: "meter", meter: { meterId, online: false } })
      break
  }
}
