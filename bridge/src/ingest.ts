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
import { writeSync } from "node:fs"
import type { Logger } from "pino"
import {
  FrameError,
  decodeUplink,
  encodeDownlink,
  type AlarmFrame,
  type BirthFrame,
  type ReadingsFrame,
  type RejectCode,
  type SealContext,
  type UplinkFrame,
} from "./codec.js"
import { BRIDGE_DEFAULTS as D } from "./defaults.js"
import { citymeter } from "./gen/citymeter.js"
import type { LiveBus, LiveEvent } from "./live.js"
import type { Metrics } from "./metrics.js"
import { retry } from "./retry.js"
import { SampledLog } from "./sampled-log.js"
import { outOfRange } from "./store/columns.js"
import { isTransientStoreError, storeErrorDetail } from "./store/errors.js"
import type { AlarmEvent, DeadLetter, FrameOutcome, IngestTx, MeterRow, ReadingRow, Store } from "./store/store.js"
import { parseUpTopic, type DownKind, type UpKind } from "./topics.js"

export type SendDownlink = (meterId: string, kind: DownKind, payload: Uint8Array) => Promise<void>

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
  /**
   * Fault injection (tests/faults-midbatch.test.ts, CITYMETER_FAULT_KILL_IN_BATCH): the process
   * SIGKILLs itself inside the first batch transaction holding at least this many frames, after
   * the batch's writes and before its commit.
   */
  faultKillInBatch?: number
  /** Open dashboards: what each batch committed, published after its commit (live.ts). */
  live?: LiveBus
  /**
   * Rejected frames are logged per reason: the first of each interval of this many ms with its
   * details, then the interval's count (sampled-log.ts). Default BRIDGE_DEFAULTS.rejectLogIntervalMs.
   */
  rejectLogIntervalMs?: number
}

/** What became of one uplink. */
export type IngestOutcome = "stored" | "duplicate" | RejectCode

/** A live (not replayed) synced frame whose end is further than this from its arrival has a wrong clock. */
export const CLOCK_SKEW_TOLERANCE_MS = 120_000
const CLOCK_CORRECTION_EVERY_MS = 60_000
/**
 * Seq plausibility: a meter assigns one seq per readings frame and one per alarm edge. Eleven
 * alarm types, each raised and cleared, and one frame make at most 23 per interval; a frame
 * whose seq is beyond what the meter can have counted since its birth is corrupt or forged.
 */
export const MAX_SEQS_PER_INTERVAL = 24
export const SEQ_SLACK = 32
/** Boot plausibility: restarts between two births the bridge sees. */
export const MAX_BOOT_JUMP = 10_000

/** The data tier refused this batch's content: retrying cannot help. */
class StoreRefused extends Error {}

/** Errors of the bridge's own code (not the data tier's): retrying cannot help either. */
const isBug = (e: unknown) =>
  e instanceof TypeError || e instanceof RangeError || e instanceof ReferenceError || e instanceof SyntaxError

/** The decoder's view of a meter's sealing (an unknown meter in the demo: open). */
export function sealContext(meter: MeterRow | undefined): SealContext {
  if (!meter) return { policy: "open", keys: [] }
  const keys = [meter.seal.key, meter.seal.nextKey].filter((k): k is Uint8Array => k !== null)
  return { policy: meter.seal.policy, keys }
}

/** An uplink waiting for its batch. */
interface Inbound {
  topic: string
  payload: Uint8Array
  at: Date
  /** performance.now() at arrival. */
  since: number
  /** From the topic; undefined when it is not an uplink topic. */
  up: { meterId: string; kind: UpKind } | undefined
  sha256: string
  /**
   * Decoded on arrival as an open frame (what most are), while the previous batch commits; used
   * when the meter's row says its frames are open and no key is registered, decoded again otherwise.
   */
  open?: UplinkFrame | FrameError
  /** Called once: with the outcome after the commit, or with an error when ingest stops first. */
  done: Settled
}

/** handle()'s outcome as a callback (submit): no promise per frame on the bridge's hot path. */
export type Settled = (err: Error | null, outcome?: IngestOutcome) => void

const OPEN: SealContext = { policy: "open", keys: [] }

/**
 * One frame's way through a batch: decided from its meter's row inside the batch's transaction,
 * written with the batch, and settled (metrics, logs, downlinks) after the commit. Built anew on
 * every attempt of the batch.
 */
interface Work {
  in: Inbound
  kind: UpKind | undefined
  meterId: string | null
  sha256: string
  frame?: UplinkFrame
  /** The key downlinks to this meter are sealed with (null: open), as the frame found it. */
  downlinkKey: Uint8Array | null
  rows?: ReadingRow[]
  event?: AlarmEvent
  /** Dead-lettered with this reason (in the batch's transaction). */
  error?: FrameError
  storedSha256?: string
  /** A bug in the bridge met while deciding: logged at error, parked. */
  bug?: Error
  claim?: FrameOutcome
  /** Acknowledged to the meter after the commit. */
  ack?: { boot: number; seq: number }
  /** Effects on the meter's row, for the log: INACTIVE cleared, key rotation confirmed, boot went back. */
  activated?: boolean
  keyConfirmed?: boolean
  previousBoot?: number
  /** A FRAME_CONFLICT alarm was raised by this frame. */
  conflictAlarm?: boolean
}

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

/** A write on a meter's row, in frame order within the batch (a later frame may depend on it). */
type MeterOp = (tx: IngestTx) => Promise<void>

/**
 * A lane commits one batch at a time, in arrival order. Frames of a meter always take the same
 * lane (by its id), so they stay in order; lanes commit side by side on their own connections.
 */
class Lane {
  /** Frames waiting for a batch, in arrival order. */
  queue: Inbound[] = []
  /** The batch in hand (its first frame is the lane's oldest unacknowledged). */
  current: Inbound[] | undefined
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
  private lastCorrection = new Map<string, number>()
  /** Sealed meters' keys in force, from their registry rows, for sealing downlinks. */
  private downlinkKeys = new Map<string, Uint8Array | null>()
  private readonly lanes: Lane[]
  /** Since when the data tier has been failing (performance.now()), or undefined. */
  private failingSince: number | undefined
  private readonly maxFrames: number
  private readonly windowMs: number
  /** Debug logging on: per-frame debug lines are built only then. */
  private readonly debug: boolean
  /** "frame rejected": a sample and a count per reason and interval, not a line per frame (a flood). */
  private readonly rejectLog: SampledLog

  constructor(
    private readonly store: Store,
    private readonly send: SendDownlink,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly opts: IngestOptions = {},
  ) {
    this.maxFrames = Math.max(1, Math.floor(opts.batchMaxFrames ?? D.batchMaxFrames))
    this.windowMs = Math.max(0, opts.batchWindowMs ?? D.batchWindowMs)
    this.debug = log.isLevelEnabled("debug")
    this.rejectLog = new SampledLog(log, "frame rejected", opts.rejectLogIntervalMs ?? D.rejectLogIntervalMs)
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
    let open: Inbound["open"]
    if (up)
      try {
        open = decodeUplink(up.kind, payload, at.getTime() / 1000, OPEN)
      } catch (e) {
        if (e instanceof FrameError) open = e
      }
    const lane = this.lanes[up && this.lanes.length > 1 ? laneOf(up.meterId, this.lanes.length) : 0]
    lane.queue.push({ topic, payload, at, since: performance.now(), up, sha256, open, done })
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
    let committed: Work[] = []
    try {
      while (lane.queue.length && !this.stopping) {
        const batch = lane.queue.splice(0, this.maxFrames)
        lane.current = batch
        const next = this.commit(batch)
        this.settleAll(committed)
        committed = []
        try {
          committed = await next
        } catch (e) {
          for (const f of batch) f.done(e as Error)
        }
      }
    } finally {
      this.settleAll(committed)
      lane.running = false
      lane.current = undefined
    }
  }

  private settleAll(works: Work[]) {
    if (!works.length) return
    const tally = new Tally()
    const live: LiveEvent[] | undefined = this.opts.live?.listening ? [] : undefined
    const outcomes: IngestOutcome[] = new Array(works.length)
    for (let i = 0; i < works.length; i++) {
      const w = works[i]
      try {
        outcomes[i] = this.settle(w, tally)
        if (live) liveEvents(w, live)
      } catch (e) {
        this.log.error({ err: e as Error, meterId: w.meterId }, "settling a committed frame failed")
        outcomes[i] = w.error?.code ?? "stored"
      }
    }
    // counters move once per batch and label, not once per frame
    for (const [kind, n] of tally.stored) this.metrics.framesStored.inc({ kind }, n)
    for (const [reason, n] of tally.rejected) this.metrics.framesRejected.inc({ reason }, n)
    if (tally.duplicates) this.metrics.framesDuplicate.inc(tally.duplicates)
    if (tally.readings) this.metrics.readingsStored.inc(tally.readings)
    if (live) this.opts.live!.publish(live)
    if (tally.lags.length) for (const lag of tally.lags) this.metrics.ingestLag.observe(lag)
    for (let i = 0; i < works.length; i++) works[i].in.done(null, outcomes[i])
  }

  /**
   * Retries a data-tier operation while the data tier is unavailable (or until the bridge stops).
   * A refusal for content (an SQLSTATE outside the transient classes), or a bug, is not retried.
   */
  private async durable<T>(what: string, op: () => Promise<T>): Promise<T> {
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
   * Commits one batch and settles its frames in order. A batch the data tier refuses is split in
   * halves, each committed on its own, until the frame it refuses is alone: that one is parked.
   * Rejects only when the bridge stops.
   */
  private async commit(batch: Inbound[]): Promise<Work[]> {
    let attempt: Work[] = []
    let done: Work[]
    const t0 = performance.now()
    try {
      done = await this.durable("batch", () =>
        this.store.ingestBatch((tx) => this.write(tx, batch, (w) => (attempt = w))),
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
      done = [await this.park(attempt[0] ?? this.work(batch[0]), e)]
    }
    this.metrics.storeLatency.observe((performance.now() - t0) / 1000)
    this.metrics.batchFrames.observe(batch.length)
    return done
  }

  /** The frame alone is refused by the data tier: parked (a dead letter of its own), acknowledged when its id can be read. */
  private async park(w: Work, e: StoreRefused): Promise<Work> {
    if (w.error && !w.bug) {
      // it was to be dead-lettered anyway: the data tier refused the dead letter itself
      this.metrics.deadLetterFailures.inc()
      this.log.error(
        { topic: w.in.topic, meterId: w.meterId, reason: w.error.code, err: e.message },
        "dead letter refused by the data tier",
      )
      return w
    }
    const parked: Work = {
      ...this.work(w.in),
      downlinkKey: w.downlinkKey,
      error: new FrameError("CM_ERR_STORE_REFUSED", e.message),
      ack: w.kind === "readings" || w.kind === "alarm" ? clearId(w.in.payload) : undefined,
    }
    try {
      await this.durable("dead letter", () =>
        this.store.ingestBatch((tx) => tx.addDeadLetters([{ letter: this.letter(parked), at: w.in.at }])),
      )
    } catch (e2) {
      if (!(e2 instanceof StoreRefused)) throw e2
      this.metrics.deadLetterFailures.inc()
      this.log.error(
        { topic: w.in.topic, meterId: w.meterId, reason: "CM_ERR_STORE_REFUSED", err: e2.message },
        "dead letter refused by the data tier",
      )
    }
    return parked
  }

  private work(f: Inbound): Work {
    return { in: f, kind: f.up?.kind, meterId: f.up?.meterId ?? null, sha256: f.sha256, downlinkKey: null }
  }

  private letter(w: Work): DeadLetter {
    return {
      topic: w.in.topic,
      meterId: w.meterId,
      reason: w.error!.code,
      detail: w.error!.message,
      payload: w.in.payload,
      storedSha256: w.storedSha256,
    }
  }

  /**
   * The batch inside its transaction: the meters' rows (one query, before any frame is decoded:
   * a row says whether and with which keys its frames are sealed), each frame decided in arrival
   * order against its meter's row as the earlier frames of the batch left it (a birth moves the
   * seq window of the frames after it), then the writes, a few statements for the whole batch.
   */
  private async write(tx: IngestTx, batch: Inbound[], attempt: (w: Work[]) => void): Promise<Work[]> {
    const works = batch.map((f) => this.work(f))
    attempt(works)
    const ids = [...new Set(works.flatMap((w) => (w.meterId !== null && w.kind ? [w.meterId] : [])))]
    const meters = await tx.getMeters(ids)
    const touches = new Map<string, { meterId: string; firstAt: Date; lastAt: Date }>()
    const touch = (meterId: string, at: Date) => {
      const t = touches.get(meterId)
      if (!t) touches.set(meterId, { meterId, firstAt: at, lastAt: at })
      else if (at > t.lastAt) t.lastAt = at
    }
    const ops: MeterOp[] = []
    for (const w of works) {
      try {
        this.decide(w, meters, touch, ops)
      } catch (e) {
        if (e instanceof FrameError) w.error = e
        else {
          // a bug in the bridge on this frame: parked like a frame the data tier refuses
          w.bug = e as Error
          w.error = new FrameError("CM_ERR_STORE_REFUSED", (e as Error).message)
          if (w.kind === "readings" || w.kind === "alarm") w.ack = clearId(w.in.payload)
        }
      }
    }
    // meters first (registered, last seen), then their rows' changes in frame order
    await tx.touchMeters([...touches.values()])
    for (const op of ops) await op(tx)
    // the ledger decides stored, duplicate or conflict for every readings and alarm frame at once
    const claims = works.filter((w) => !w.error && (w.rows || w.event))
    const outcomes = await tx.claimFrames(
      claims.map((w) => {
        const f = w.frame as ReadingsFrame | AlarmFrame
        return { meterId: w.meterId!, boot: f.boot, seq: f.seq, sha256: w.sha256, kind: f.kind, at: w.in.at }
      }),
    )
    claims.forEach((w, i) => (w.claim = outcomes[i]))
    const stored = claims.filter((w) => w.claim!.kind === "stored")
    await tx.writeReadings(stored.flatMap((w) => w.rows ?? []))
    await tx.writeAlarms(stored.flatMap((w) => (w.event ? [w.event] : [])))
    for (const w of claims) {
      const c = w.claim!
      if (c.kind !== "conflict") continue
      // same id, other content: acknowledged so the meter's queue drains, never dropped unseen
      const f = w.frame as ReadingsFrame | AlarmFrame
      w.storedSha256 = c.storedSha256
      w.error = new FrameError(
        "CM_ERR_CONFLICT",
        `(boot ${f.boot}, seq ${f.seq}) was stored with content ${c.storedSha256.slice(0, 16)}…, this is ${w.sha256.slice(0, 16)}…`,
      )
      w.conflictAlarm = await tx.raiseBridgeAlarm(w.meterId!, "FRAME_CONFLICT", f.seq, w.in.at)
    }
    await tx.addDeadLetters(works.filter((w) => w.error).map((w) => ({ letter: this.letter(w), at: w.in.at })))
    if (this.opts.faultKillInBatch !== undefined && works.length >= this.opts.faultKillInBatch) killInBatch(works)
    return works
  }

  /**
   * Decides one frame against its meter's row (updated in `meters` for the frames after it) and
   * queues its writes: touches, row changes (ops, in order); readings rows and alarm events are
   * written after the ledger's claim. Throws a FrameError for a frame to dead-letter.
   */
  private decide(w: Work, meters: Map<string, MeterRow>, touch: (meterId: string, at: Date) => void, ops: MeterOp[]) {
    const at = w.in.at
    if (!w.kind || w.meterId === null)
      throw new FrameError("CM_ERR_TOPIC", "not a citymeter/v1/<meter>/up/<kind> topic")
    const meterId = w.meterId
    // the meter first: its registry entry says whether (and with which keys) its frames are sealed
    let meter = meters.get(meterId)
    if (!meter && !this.opts.autoRegister) throw new FrameError("CM_ERR_UNKNOWN_METER", "meter is not provisioned")
    // an open meter without keys (sealContext: open, no keys): decoded on arrival with that context
    const open = !meter || (meter.seal.policy === "open" && meter.seal.key === null && meter.seal.nextKey === null)
    const decoded =
      w.in.open && open ? w.in.open : decodeUplink(w.kind, w.in.payload, at.getTime() / 1000, sealContext(meter))
    if (decoded instanceof FrameError) throw decoded
    const frame = decoded
    w.frame = frame
    if (!meter) {
      meter = newMeterRow(meterId, at)
      meters.set(meterId, meter)
      touch(meterId, at)
    }
    const m = meter
    w.downlinkKey = m.seal.policy === "sealed" ? m.seal.key : null
    if (frame.keyIndex === 1) {
      // sealed with the next key: the meter has switched (key rotation); the next key is now the key
      const seal = { key: m.seal.nextKey, nextKey: null }
      m.seal = { ...m.seal, ...seal }
      w.keyConfirmed = true
      ops.push(async (tx) => void (await tx.setSeal(meterId, seal)))
    }
    switch (frame.kind) {
      case "readings": {
        this.checkWindow(m, frame, at)
        const rows = expandReadings(meterId, frame, m.boot === frame.boot ? m.uptimeEpochMs : null, at)
        for (const r of rows) {
          const bad = outOfRange(r)
          if (bad) throw new FrameError("CM_ERR_FIELD", bad)
        }
        touch(meterId, at)
        activate(w, m, at, ops)
        w.rows = rows
        w.ack = { boot: frame.boot, seq: frame.seq }
        return
      }
      case "alarm": {
        this.checkWindow(m, frame, at)
        touch(meterId, at)
        activate(w, m, at, ops)
        w.event = {
          meterId,
          boot: frame.boot,
          seq: frame.seq,
          type: frame.type,
          active: frame.active,
          ts: frame.timeSynced ? new Date(frame.timeS * 1000) : at,
          value: frame.value,
        }
        w.ack = { boot: frame.boot, seq: frame.seq }
        return
      }
      case "birth":
        return this.birth(w, m, frame, at, ops)
      case "death": {
        if (frame.boot === 0) throw new FrameError("CM_ERR_STALE_DEATH", "a death without a boot changes nothing")
        // link = connection × 256 + birth number (proto Uplink.link): a will of an earlier connection is stale
        if (frame.boot === m.boot && frame.link > 0 && connectionOf(frame.link) < connectionOf(m.birthLink ?? 0))
          throw new FrameError(
            "CM_ERR_STALE_DEATH",
            `death of connection ${connectionOf(frame.link)}; connection ${connectionOf(m.birthLink ?? 0)} was born since`,
          )
        if (m.boot === null || m.boot <= frame.boot) m.online = false
        ops.push(async (tx) => {
          // the row decides (another bridge may have seen a birth since): a stale death changes nothing
          if (!(await tx.recordDeath(meterId, frame.boot, at)))
            w.error = new FrameError(
              "CM_ERR_STALE_DEATH",
              `death of boot ${frame.boot}; the meter was born again since`,
            )
        })
        return
      }
    }
  }

  private birth(w: Work, m: MeterRow, frame: Extract<UplinkFrame, BirthFrame>, at: Date, ops: MeterOp[]) {
    const meterId = m.meterId
    if (frame.keyIndex !== null && frame.boot === m.boot && frame.link <= (m.birthLink ?? 0))
      throw new FrameError(
        "CM_ERR_REPLAY",
        `birth ${frame.link} (connection × 256 + birth); ${m.birthLink} was born already`,
      )
    // A re-flashed or wiped meter starts a new life at a random boot in [2^21, 2^28) (firmware/store.ts
    // firstBoot), far behind or far ahead of its last: taken as a new life, counted and logged,
    // never refused (refusing a jump ahead left the meter's queue unsendable for good).
    // Frames colliding with stored ones are conflicts (dead-lettered, alarmed), never dropped unseen.
    if (m.boot !== null && (frame.boot < m.boot || frame.boot > m.boot + MAX_BOOT_JUMP)) w.previousBoot = m.boot
    const birth = {
      firmware: frame.firmware,
      board: frame.board,
      boot: frame.boot,
      seq: frame.seq,
      link: frame.link,
      intervalS: frame.intervalS,
      batch: frame.batch,
      uptimeEpochMs: at.getTime() - frame.uptimeS * 1000,
      channels: frame.channels,
      alarmRules: frame.alarmRules,
      queued: frame.queued,
      dropped: frame.dropped,
      unstored: frame.unstored,
    }
    Object.assign(m, {
      online: true,
      lastSeen: at > m.lastSeen ? at : m.lastSeen,
      firmware: birth.firmware,
      board: birth.board,
      boot: birth.boot,
      intervalS: birth.intervalS,
      batch: birth.batch,
      uptimeEpochMs: birth.uptimeEpochMs,
      birthSeq: birth.seq,
      bornAt: at,
      birthLink: birth.link,
      channels: birth.channels,
      alarmRules: birth.alarmRules,
      queued: birth.queued,
      dropped: birth.dropped,
      unstored: birth.unstored,
    } satisfies Partial<MeterRow>)
    ops.push((tx) => tx.recordBirth(meterId, birth, at))
    activate(w, m, at, ops)
  }

  /**
   * Frames of the meter's current boot must have a seq it can have reached since its birth;
   * frames of a later boot than its last birth are not acknowledged (the meter sends them again
   * after its next birth); an implausible boot is corrupt. A meter never born has no window yet.
   */
  private checkWindow(m: MeterRow, f: ReadingsFrame | AlarmFrame, at: Date) {
    if (m.boot === null) return
    if (f.boot > m.boot)
      throw new FrameError("CM_ERR_BOOT", `boot ${f.boot} is ahead of the meter's last birth (boot ${m.boot})`)
    if (f.boot < m.boot - MAX_BOOT_JUMP)
      throw new FrameError(
        "CM_ERR_BOOT",
        `boot ${f.boot} is more than ${MAX_BOOT_JUMP} behind the last birth (${m.boot})`,
      )
    const since = f.boot === m.boot ? m.bornAt : m.firstSeen
    if (!since) return
    const intervalS = Math.max(1, Math.min(m.intervalS ?? 1, f.kind === "readings" ? f.intervalS : Infinity))
    const intervals = Math.ceil(Math.max(0, at.getTime() - since.getTime()) / 1000 / intervalS)
    const maxSeq = (f.boot === m.boot ? (m.birthSeq ?? 0) : 0) + MAX_SEQS_PER_INTERVAL * intervals + SEQ_SLACK
    if (f.seq > maxSeq)
      throw new FrameError("CM_ERR_SEQ", `seq ${f.seq} is beyond ${maxSeq}, the most boot ${f.boot} can have reached`)
  }

  /** After the commit: counts, logs and downlinks of one frame, in arrival order. Returns its outcome. */
  private settle(w: Work, tally: Tally): IngestOutcome {
    const { meterId } = w
    if (meterId !== null && w.frame) this.downlinkKeys.set(meterId, w.downlinkKey)
    if (w.keyConfirmed) this.log.info({ meterId }, "key rotation confirmed by the meter")
    if (w.activated) this.log.info({ meterId }, "meter active again; INACTIVE alarm cleared")
    if (w.bug) this.log.error({ err: w.bug, meterId }, "ingest failed on this frame")
    let outcome: IngestOutcome
    if (w.error) {
      outcome = w.error.code
      tally.count(tally.rejected, outcome)
      const error = w.error
      this.rejectLog.note(outcome, outcome === "CM_ERR_STORE_REFUSED" ? "error" : "warn", () => ({
        topic: w.in.topic,
        meterId,
        detail: error.message,
        bytes: w.in.payload.length,
      }))
      if (w.conflictAlarm) this.log.warn({ meterId, boot: w.ack?.boot, seq: w.ack?.seq }, "FRAME_CONFLICT alarm raised")
    } else outcome = w.claim?.kind === "duplicate" ? "duplicate" : "stored"
    const f = w.frame
    if (!w.error && f) {
      if (w.claim?.kind === "duplicate") tally.duplicates++
      else tally.count(tally.stored, f.kind)
      switch (f.kind) {
        case "readings":
          if (w.claim?.kind === "stored" && w.rows?.length) {
            tally.readings += w.rows.length
            const last = w.rows[w.rows.length - 1]
            tally.lags.push(Math.max(0, (Date.now() - last.ts.getTime()) / 1000 - last.intervalS))
          }
          if (this.debug) this.log.debug({ meterId, boot: f.boot, seq: f.seq, outcome }, "readings frame")
          break
        case "birth":
          if (w.previousBoot !== undefined) {
            this.metrics.bootRegressions.inc()
            this.log.warn(
              { meterId, boot: f.boot, previousBoot: w.previousBoot },
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
    if (w.ack && meterId !== null)
      void this.downlink(meterId, "ack", this.encode(meterId, { ack: w.ack }, w.downlinkKey))
    if (f?.kind === "readings" && (!w.error || w.error.code === "CM_ERR_CONFLICT"))
      this.checkClock(meterId!, f, w.in.at)
    return outcome
  }

  /** Pushes a TimeSync to a meter whose synced frames arrive with a skewed clock (at most once a minute). */
  private checkClock(meterId: string, f: ReadingsFrame, at: Date) {
    if (!f.timeSynced || f.replayed) return
    const endMs = (f.startS + f.intervals.length * f.intervalS) * 1000
    const skewMs = endMs - at.getTime()
    if (Math.abs(skewMs) <= CLOCK_SKEW_TOLERANCE_MS + f.intervalS * 1000) return
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

/** What a committed frame changed, for open dashboards (live.ts). */
function liveEvents(w: Work, out: LiveEvent[]) {
  const meterId = w.meterId
  const f = w.frame
  if (meterId === null || !f || w.claim?.kind === "duplicate") return
  const at = w.in.at
  if (w.activated) {
    out.push({ kind: "meter", meter: { meterId, online: true, inactive: false } })
    const clear = {
      meterId,
      boot: 0,
      seq: 0,
      type: "INACTIVE",
      active: false,
      ts: at,
      value: 0,
      source: "bridge",
    } as const
    out.push({ kind: "alarm", alarm: clear })
  }
  if (w.conflictAlarm)
    out.push({
      kind: "alarm",
      alarm: { meterId, boot: 0, seq: 0, type: "FRAME_CONFLICT", active: true, ts: at, value: 0, source: "bridge" },
    })
  if (w.error) return
  switch (f.kind) {
    case "readings":
      if (w.rows?.length) out.push({ kind: "reading", meterId, reading: w.rows[w.rows.length - 1] })
      out.push({ kind: "meter", meter: { meterId, lastSeen: at } })
      break
    case "alarm":
      if (w.event) out.push({ kind: "alarm", alarm: { ...w.event, source: "meter" } })
      out.push({ kind: "meter", meter: { meterId, lastSeen: at } })
      break
    case "birth":
      out.push({
        kind: "meter",
        meter: {
          meterId,
          online: true,
          lastSeen: at,
          firmware: f.firmware,
          board: f.board,
          boot: f.boot,
          queued: f.queued,
          dropped: f.dropped,
        },
      })
      break
    case "death":
      out.push({ kind: "meter", meter: { meterId, online: false } })
      break
  }
}

/** Fault injection: dies mid-batch (written, not committed), saying which frames were in the batch. */
function killInBatch(works: Work[]): never {
  const frames = works.flatMap((w) =>
    w.frame && (w.frame.kind === "readings" || w.frame.kind === "alarm")
      ? [`${w.meterId}/${w.frame.boot}/${w.frame.seq}`]
      : [],
  )
  // written synchronously: nothing of this process runs after the signal
  writeSync(2, `${JSON.stringify({ msg: "fault injection: SIGKILL inside a batch", batch: works.length, frames })}\n`)
  process.kill(process.pid, "SIGKILL")
  throw new Error("unreachable: SIGKILL")
}

/** A frame from an INACTIVE meter makes it active again (the INACTIVE alarm cleared in the batch). */
function activate(w: Work, m: MeterRow, at: Date, ops: MeterOp[]) {
  if (!m.inactive) return
  m.inactive = false
  m.online = true
  ops.push(async (tx) => void (w.activated = await tx.markActive(m.meterId, at)))
}

/** The connection part of proto Uplink.link (connection × 256 + birth number). */
const connectionOf = (link: number) => Math.floor(link / 256)

/** A meter registered by its first frame (the demo): no birth yet, no seq window. */
function newMeterRow(meterId: string, at: Date): MeterRow {
  return {
    meterId,
    online: false,
    firstSeen: at,
    lastSeen: at,
    firmware: null,
    board: null,
    boot: null,
    intervalS: null,
    batch: null,
    uptimeEpochMs: null,
    inactive: false,
    queued: null,
    dropped: null,
    unstored: null,
    location: null,
    birthSeq: null,
    bornAt: null,
    birthLink: null,
    channels: [],
    alarmRules: [],
    seal: { policy: "open", key: null, nextKey: null },
  }
}

/** (boot, seq) from the clear envelope (readable in sealed frames too), or undefined when it cannot be read. */
function clearId(payload: Uint8Array): { boot: number; seq: number } | undefined {
  try {
    const u = citymeter.v1.Uplink.decode(payload)
    return u.seq ? { boot: Number(u.boot), seq: Number(u.seq) } : undefined
  } catch {
    return undefined
  }
}

/**
 * One row per interval. Timestamps: the meter's own when it was time-synced; else its uptime
 * mapped through the boot's birth (uptimeEpochMs); else counted back from the arrival time.
 */
export function expandReadings(
  meterId: string,
  f: ReadingsFrame,
  uptimeEpochMs: number | null,
  at: Date,
): ReadingRow[] {
  const n = f.intervals.length
  const stepMs = f.intervalS * 1000
  const startMs = f.timeSynced
    ? f.startS * 1000
    : uptimeEpochMs !== null
      ? uptimeEpochMs + f.startS * 1000
      : at.getTime() - n * stepMs
  const endMs = startMs + n * stepMs
  const backfill = f.replayed || at.getTime() - endMs > 2 * stepMs + 30_000
  // neither the meter's clock nor its boot's birth: the arrival-based start is a placeholder
  const tsEstimated = !f.timeSynced && uptimeEpochMs === null
  // Per-interval cumulative totals, counted back from the batch total at the end of the batch.
  let water = f.waterTotalMl
  let energy = f.energyTotalWh
  const rows: ReadingRow[] = new Array(n)
  for (let i = n - 1; i >= 0; i--) {
    const v = f.intervals[i]
    rows[i] = {
      meterId,
      ts: new Date(startMs + i * stepMs),
      intervalS: f.intervalS,
      boot: f.boot,
      seq: f.seq,
      idx: i,
      volumeMl: v.volumeMl ?? null,
      reverseMl: v.reverseMl ?? null,
      waterTotalMl: water ?? null,
      energyWh: v.energyWh ?? null,
      energyTotalWh: energy ?? null,
      powerW: v.powerW ?? null,
      voltageDv: v.voltageDv ?? null,
      pressureMinPa: v.pressureMinPa ?? null,
      pressureAvgPa: v.pressureAvgPa ?? null,
      pressureMaxPa: v.pressureMaxPa ?? null,
      timeSynced: f.timeSynced,
      backfill,
      tsEstimated,
      // the counts missing after a restart are missing before the frame's first interval
      afterReboot: f.afterReboot && i === 0,
    }
    if (water !== undefined) water -= v.volumeMl ?? 0
    if (energy !== undefined) energy -= v.energyWh ?? 0
  }
  return rows
}
