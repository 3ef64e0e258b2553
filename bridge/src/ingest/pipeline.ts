// Uplink ingest: topic + payload → validated frame → committed rows → downlink (ack / time), in
// batches. Frames are grouped into one transaction (at most batchMaxFrames, gathered for at most
// batchWindowMs while the pipeline is idle, or while the previous batch commits); handle()
// resolves after the commit, and the caller sends the broker's acknowledgement only then.
// Every frame ends in one of: stored, duplicate (same content as a stored frame), or dead-lettered
// with a reason (counted, logged with its meter), its dead letter in the same transaction.
// Content errors are per frame: a batch the data tier refuses is split in halves until the frame
// it refuses is alone, and that frame is parked and acknowledged, so it never blocks the others.
// Only an unavailable data tier is retried, the whole batch unacknowledged at the broker.
import { hash } from "node:crypto"
import type { Logger } from "pino"
import { FrameError } from "../codec/frames.js"
import { BRIDGE_DEFAULTS as D } from "../defaults.js"
import type { LiveBus } from "../live.js"
import type { Metrics } from "../metrics.js"
import { retry } from "../retry.js"
import { SampledLog } from "../sampled-log.js"
import { isTransientStoreError, storeErrorDetail } from "../store/errors.js"
import type { Store } from "../store/store.js"
import { parseUpTopic } from "../topics.js"
import {
  batchEntry,
  deadLetterOf,
  writeBatch,
  type Arrival,
  type BatchEntry,
  type BeforeCommit,
  type IngestOutcome,
  type Settled,
} from "./batch.js"
import { AfterCommit, type SendDownlink } from "./effects.js"
import { idInClear, readArrival } from "./rules.js"

export interface IngestOptions {
  /**
   * Accept frames from meters the registry does not know (registering them): the demo only. In
   * production a meter must be provisioned first (`citymeter provision`, PUT /meters/:id).
   */
  autoRegister?: boolean
  /** First delay between tries of a failed data-tier operation, ms (retry.ts); default BRIDGE_DEFAULTS.retryMs. */
  retryMs?: number
  /** Most frames in one batch (one transaction). Default BRIDGE_DEFAULTS.batchMaxFrames (defaults.ts). */
  batchMaxFrames?: number
  /**
   * How long a batch gathers frames after the first one arrives at an idle pipeline, ms (0: the
   * frames already handed over, nothing more). While a batch commits the next one gathers anyway.
   * Default BRIDGE_DEFAULTS.batchWindowMs.
   */
  batchWindowMs?: number
  /**
   * Batches committed side by side, each on its own connection; a meter's frames always take the
   * same lane. Default BRIDGE_DEFAULTS.lanes on PostgreSQL, 1 on PGlite (one connection, in this thread).
   */
  lanes?: number
  /** Tests only: runs inside each batch's transaction after its writes (fault-kill.ts). */
  beforeCommit?: BeforeCommit
  /** Open dashboards: what each batch committed, published after its commit (live.ts). */
  live?: LiveBus
  /**
   * Rejected frames are logged per reason: the first of each interval of this many ms with its
   * details, then the interval's count (sampled-log.ts). Default BRIDGE_DEFAULTS.rejectLogIntervalMs.
   */
  rejectLogIntervalMs?: number
}

/** The data tier refused this batch's content: retrying cannot help. */
class StoreRefused extends Error {}

/** Errors of the bridge's own code (not the data tier's): retrying cannot help either. */
const isBug = (e: unknown) =>
  e instanceof TypeError || e instanceof RangeError || e instanceof ReferenceError || e instanceof SyntaxError

/**
 * A lane commits one batch at a time, in arrival order. Frames of a meter always take the same
 * lane (by its id), so they stay in order; lanes commit side by side on their own connections.
 */
class Lane {
  /** Frames waiting for a batch, in arrival order. */
  queue: Arrival[] = []
  /** The batch in hand (its first frame is the lane's oldest unacknowledged). */
  current: Arrival[] | undefined
  running = false
  timer: NodeJS.Timeout | NodeJS.Immediate | undefined

  clearTimer() {
    if (!this.timer) return
    clearTimeout(this.timer as NodeJS.Timeout)
    clearImmediate(this.timer as NodeJS.Immediate)
    this.timer = undefined
  }
}

/** FNV-1a of the meter id: its lane. */
function laneOf(meterId: string, lanes: number) {
  let h = 0x811c9dc5
  for (let i = 0; i < meterId.length; i++) h = Math.imul(h ^ meterId.charCodeAt(i), 0x01000193)
  return (h >>> 0) % lanes
}

export class Ingest {
  private stopping = false
  private readonly lanes: Lane[]
  /** Since when the data tier has been failing (performance.now()), or undefined. */
  private failingSince: number | undefined
  private readonly maxFrames: number
  private readonly windowMs: number
  private readonly rejectLog: SampledLog
  private readonly afterCommit: AfterCommit

  constructor(
    private readonly store: Store,
    send: SendDownlink,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly opts: IngestOptions = {},
  ) {
    this.maxFrames = Math.max(1, Math.floor(opts.batchMaxFrames ?? D.batchMaxFrames))
    this.windowMs = Math.max(0, opts.batchWindowMs ?? D.batchWindowMs)
    this.rejectLog = new SampledLog(log, "frame rejected", opts.rejectLogIntervalMs ?? D.rejectLogIntervalMs)
    this.afterCommit = new AfterCommit(send, metrics, log, this.rejectLog, opts.live)
    const lanes = opts.lanes ?? (store.engine === "pglite" ? 1 : D.lanes)
    this.lanes = Array.from({ length: Math.max(1, Math.floor(lanes)) }, () => new Lane())
  }

  /** Frames received and not settled yet (queued or in a batch in hand). */
  get pending() {
    return this.lanes.reduce((n, l) => n + l.queue.length + (l.current?.length ?? 0), 0)
  }

  /** No new batch starts; frames waiting for one are refused (left unacknowledged). */
  stop() {
    this.stopping = true
    this.rejectLog.flush()
    const e = new Error("ingest stopped")
    for (const lane of this.lanes) {
      lane.clearTimer()
      for (const f of lane.queue.splice(0)) f.done(e)
    }
  }

  /** How long the oldest frame in hand has waited for its acknowledgement, and how long the data tier has failed (ms). */
  health(now = performance.now()) {
    let oldest = Infinity
    for (const l of this.lanes) oldest = Math.min(oldest, l.current?.[0]?.since ?? l.queue[0]?.since ?? Infinity)
    return {
      busyMs: oldest === Infinity ? 0 : now - oldest,
      failingMs: this.failingSince === undefined ? 0 : now - this.failingSince,
    }
  }

  /**
   * Handles one uplink: resolves when its batch has committed (stored, duplicate, or
   * dead-lettered), and its meter's acknowledgement is sent; rejects only when ingest stops.
   */
  handle(topic: string, payload: Uint8Array, at = new Date()): Promise<IngestOutcome> {
    return new Promise((resolve, reject) =>
      this.submit(topic, payload, at, (err, outcome) => (err ? reject(err) : resolve(outcome!))),
    )
  }

  /** handle() with a callback: `done` is called once, as handle() would resolve or reject. */
  submit(topic: string, payload: Uint8Array, at: Date, done: Settled): void {
    const up = parseUpTopic(topic)
    this.metrics.framesIn.inc({ kind: up?.kind ?? "invalid" })
    if (this.stopping) return done(new Error("ingest stopped"))
    const sha256 = hash("sha256", payload, "hex")
    // read here, while the previous batch commits: the batch's transaction only opens it
    const read = up ? readArrival(up.kind, payload, at) : undefined
    const lane = this.lanes[up && this.lanes.length > 1 ? laneOf(up.meterId, this.lanes.length) : 0]
    lane.queue.push({ topic, payload, at, since: performance.now(), up, sha256, read, done })
    this.schedule(lane)
  }

  private schedule(lane: Lane) {
    if (lane.running) return // the loop takes the queue when the batch in hand has committed
    if (lane.queue.length >= this.maxFrames) return this.startNow(lane)
    if (lane.timer) return
    lane.timer =
      this.windowMs > 0 ? setTimeout(() => this.startNow(lane), this.windowMs) : setImmediate(() => this.startNow(lane))
  }

  private startNow(lane: Lane) {
    lane.clearTimer()
    if (lane.running) return
    lane.running = true
    void this.loop(lane)
  }

  /**
   * One batch at a time per lane, in arrival order: what arrives meanwhile makes the next batch.
   * A batch's frames are settled (downlinks, resolved: the caller's PUBACKs) once the next batch's
   * transaction has started, so the data tier works on it meanwhile.
   */
  private async loop(lane: Lane) {
    let committed: BatchEntry[] = []
    try {
      while (lane.queue.length && !this.stopping) {
        const batch = lane.queue.splice(0, this.maxFrames)
        lane.current = batch
        const next = this.commit(batch)
        this.settle(committed)
        committed = []
        try {
          committed = await next
        } catch (e) {
          for (const f of batch) f.done(e as Error)
        }
      }
    } finally {
      this.settle(committed)
      lane.running = false
      lane.current = undefined
    }
  }

  /** After the commit: effects, then each frame's caller (the broker's PUBACK). */
  private settle(entries: BatchEntry[]) {
    if (!entries.length) return
    const outcomes = this.afterCommit.settleBatch(entries)
    for (let i = 0; i < entries.length; i++) entries[i].arrival.done(null, outcomes[i])
  }

  /**
   * Retries a data-tier operation while the data tier is unavailable (or until the bridge stops).
   * A refusal for content (an SQLSTATE outside the transient classes), or a bug, is not retried.
   */
  private async retryWhileUnavailable<T>(what: string, op: () => Promise<T>): Promise<T> {
    try {
      const v = await retry(op, {
        baseMs: this.opts.retryMs,
        retryable: (e) => !this.stopping && !isBug(e) && isTransientStoreError(e),
        onRetry: (e, attempt) => {
          this.failingSince ??= performance.now()
          this.metrics.storeErrors.inc()
          if (attempt % 10 === 0)
            this.log.error({ err: (e as Error).message, what, attempt }, "data tier unavailable; retrying")
        },
      })
      this.failingSince = undefined
      return v
    } catch (e) {
      if (this.stopping) throw e
      throw new StoreRefused(`${what}: ${storeErrorDetail(e)}`)
    }
  }

  /**
   * Commits one batch and returns its frames in order. A batch the data tier refuses is split in
   * halves, each committed on its own, until the frame it refuses is alone: that one is parked.
   * Rejects only when the bridge stops.
   */
  private async commit(batch: Arrival[]): Promise<BatchEntry[]> {
    let attempt: BatchEntry[] = []
    let done: BatchEntry[]
    const t0 = performance.now()
    const opts = { autoRegister: this.opts.autoRegister, beforeCommit: this.opts.beforeCommit }
    try {
      done = await this.retryWhileUnavailable("batch", () =>
        this.store.ingestBatch((tx) => writeBatch(tx, batch, opts, (entries) => (attempt = entries))),
      )
    } catch (e) {
      if (!(e instanceof StoreRefused)) throw e
      if (batch.length > 1) {
        this.log.warn(
          { frames: batch.length, err: e.message },
          "batch refused by the data tier; splitting it to find the frame",
        )
        const half = Math.ceil(batch.length / 2)
        return [...(await this.commit(batch.slice(0, half))), ...(await this.commit(batch.slice(half)))]
      }
      done = [await this.park(attempt[0] ?? batchEntry(batch[0]), e)]
    }
    this.metrics.storeLatency.observe((performance.now() - t0) / 1000)
    this.metrics.batchFrames.observe(batch.length)
    return done
  }

  /** The frame alone is refused by the data tier: parked (a dead letter of its own), acknowledged when its id can be read. */
  private async park(entry: BatchEntry, e: StoreRefused): Promise<BatchEntry> {
    const { topic, at } = entry.arrival
    if (entry.error && !entry.bug) {
      // it was to be dead-lettered anyway: the data tier refused the dead letter itself
      this.metrics.deadLetterFailures.inc()
      this.log.error(
        { topic, meterId: entry.meterId, reason: entry.error.code, err: e.message },
        "dead letter refused by the data tier",
      )
      return entry
    }
    const parked: BatchEntry = {
      ...batchEntry(entry.arrival),
      downlinkKey: entry.downlinkKey,
      error: new FrameError("CM_ERR_STORE_REFUSED", e.message),
      ack: entry.kind === "readings" || entry.kind === "alarm" ? idInClear(entry.arrival) : undefined,
    }
    try {
      await this.retryWhileUnavailable("dead letter", () =>
        this.store.ingestBatch((tx) => tx.addDeadLetters([{ letter: deadLetterOf(parked), at }])),
      )
    } catch (e2) {
      if (!(e2 instanceof StoreRefused)) throw e2
      this.metrics.deadLetterFailures.inc()
      this.log.error(
        { topic, meterId: entry.meterId, reason: "CM_ERR_STORE_REFUSED", err: e2.message },
        "dead letter refused by the data tier",
      )
    }
    return parked
  }
}
