// Uplink ingest: topic + payload → validated frame → committed rows → downlink (ack / time).
// Every frame ends in one of: stored, duplicate (same content as a stored frame), or dead-lettered
// with a reason (counted, logged with its meter). Content errors are per frame: a frame the data
// tier refuses for its content is parked and acknowledged, so it can never stall other meters.
// Only an unavailable data tier is retried, with the frame unacknowledged at the broker (the MQTT
// acknowledgement is sent by the caller after handle() resolves, so it always follows the commit).
import { createHash } from "node:crypto"
import type { Logger } from "pino"
import {
  FrameError,
  decodeUplink,
  encodeDownlink,
  type AlarmFrame,
  type ReadingsFrame,
  type RejectCode,
  type SealContext,
} from "./codec.js"
import { citymeter } from "./gen/citymeter.js"
import type { Metrics } from "./metrics.js"
import { outOfRange } from "./store/columns.js"
import { isTransientStoreError, storeErrorDetail } from "./store/errors.js"
import type { FrameOutcome, MeterRow, ReadingRow, Store } from "./store/store.js"
import { parseUpTopic, type DownKind } from "./topics.js"

export type SendDownlink = (meterId: string, kind: DownKind, payload: Uint8Array) => Promise<void>

export interface IngestOptions {
  /**
   * Accept frames from meters the registry does not know (registering them): the demo only. In
   * production a meter must be provisioned first (`citymeter provision`, PUT /meters/:id).
   */
  autoRegister?: boolean
  /** Delay between retries of a failed data-tier operation, ms. */
  retryMs?: number
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

/** The data tier refused this frame's content: retrying cannot help. */
class StoreRefused extends Error {}

/** The decoder's view of a meter's sealing (an unknown meter in the demo: open). */
export function sealContext(meter: MeterRow | undefined): SealContext {
  if (!meter) return { policy: "open", keys: [] }
  const keys = [meter.seal.key, meter.seal.nextKey].filter((k): k is Uint8Array => k !== null)
  return { policy: meter.seal.policy, keys }
}

export class Ingest {
  private stopping = false
  private lastCorrection = new Map<string, number>()
  /** Sealed meters' keys in force, from their registry rows, for sealing downlinks. */
  private downlinkKeys = new Map<string, Uint8Array | null>()
  /** When the frame in hand arrived (performance.now()), or undefined when idle. */
  private busySince: number | undefined
  /** Since when the data tier has been failing (performance.now()), or undefined. */
  private failingSince: number | undefined

  constructor(
    private readonly store: Store,
    private readonly send: SendDownlink,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly opts: IngestOptions = {},
  ) {}

  stop() {
    this.stopping = true
  }

  /** How long the frame in hand has waited for its acknowledgement, and how long the data tier has failed (ms). */
  health(now = performance.now()) {
    return {
      busyMs: this.busySince === undefined ? 0 : now - this.busySince,
      failingMs: this.failingSince === undefined ? 0 : now - this.failingSince,
    }
  }

  /**
   * Retries a data-tier operation while the data tier is unavailable (or until the bridge stops).
   * A refusal for content (an SQLSTATE outside the transient classes) is not retried.
   */
  private async durable<T>(what: string, op: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        const v = await op()
        this.failingSince = undefined
        return v
      } catch (e) {
        if (this.stopping) throw e
        if (!isTransientStoreError(e)) throw new StoreRefused(`${what}: ${storeErrorDetail(e)}`)
        this.failingSince ??= performance.now()
        this.metrics.storeErrors.inc()
        if (attempt % 10 === 0)
          this.log.error({ err: (e as Error).message, what, attempt }, "data tier unavailable; retrying")
        await new Promise((r) => setTimeout(r, Math.min(5000, (this.opts.retryMs ?? 200) * (1 + attempt))))
      }
    }
  }

  /** Counts, logs and dead-letters a frame. A dead letter the data tier refuses is logged and dropped. */
  private async reject(
    topic: string,
    meterId: string | null,
    err: FrameError,
    payload: Uint8Array,
    at: Date,
    storedSha256?: string,
  ): Promise<RejectCode> {
    this.metrics.framesRejected.inc({ reason: err.code })
    const level = err.code === "CM_ERR_STORE_REFUSED" ? "error" : "warn"
    this.log[level]({ topic, meterId, reason: err.code, detail: err.message, bytes: payload.length }, "frame rejected")
    const letter = { topic, meterId, reason: err.code, detail: err.message, payload, storedSha256 }
    try {
      await this.durable("dead letter", () => this.store.addDeadLetter(letter, at))
    } catch (e) {
      if (!(e instanceof StoreRefused)) throw e
      this.metrics.deadLetterFailures.inc()
      this.log.error({ topic, meterId, reason: err.code, err: e.message }, "dead letter refused by the data tier")
    }
    return err.code
  }

  /** Handles one uplink; resolves when it is committed, a duplicate, or dead-lettered. */
  async handle(topic: string, payload: Uint8Array, at = new Date()): Promise<IngestOutcome> {
    this.busySince = performance.now()
    try {
      return await this.handleFrame(topic, payload, at)
    } finally {
      this.busySince = undefined
    }
  }

  private async handleFrame(topic: string, payload: Uint8Array, at: Date): Promise<IngestOutcome> {
    const t = parseUpTopic(topic)
    this.metrics.framesIn.inc({ kind: t?.kind ?? "invalid" })
    if (!t)
      return this.reject(
        topic,
        null,
        new FrameError("CM_ERR_TOPIC", "not a citymeter/v1/<meter>/up/<kind> topic"),
        payload,
        at,
      )
    const { meterId } = t
    const sha256 = createHash("sha256").update(payload).digest("hex")
    try {
      // the meter first: its registry entry says whether (and with which keys) its frames are sealed
      let meter = await this.durable("meter", () => this.store.getMeter(meterId))
      if (!meter && !this.opts.autoRegister) throw new FrameError("CM_ERR_UNKNOWN_METER", "meter is not provisioned")
      const frame = decodeUplink(t.kind, payload, at.getTime() / 1000, sealContext(meter))
      meter ??= await this.durable("register", () => this.store.touchMeter(meterId, at))
      this.downlinkKeys.set(meterId, meter.seal.policy === "sealed" ? meter.seal.key : null)
      if (frame.keyIndex === 1) await this.keyConfirmed(meterId, meter)
      switch (frame.kind) {
        case "readings":
          return await this.readings(meterId, meter, frame, sha256, payload, topic, at)
        case "alarm":
          return await this.alarm(meterId, meter, frame, sha256, payload, topic, at)
        case "birth":
          return await this.birth(meterId, meter, frame, at)
        case "death": {
          if (frame.boot === 0) throw new FrameError("CM_ERR_STALE_DEATH", "a death without a boot changes nothing")
          if (frame.boot === meter.boot && frame.link > 0 && frame.link < (meter.birthLink ?? 0))
            throw new FrameError(
              "CM_ERR_STALE_DEATH",
              `death of connection ${frame.link}; connection ${meter.birthLink} was born since`,
            )
          if (!(await this.durable("death", () => this.store.recordDeath(meterId, frame.boot, at))))
            throw new FrameError("CM_ERR_STALE_DEATH", `death of boot ${frame.boot}; the meter was born again since`)
          this.metrics.framesStored.inc({ kind: "death" })
          this.log.info({ meterId, boot: frame.boot }, "meter death")
          return "stored"
        }
      }
    } catch (e) {
      if (e instanceof FrameError) return this.reject(topic, meterId, e, payload, at)
      if (e instanceof StoreRefused || !this.stopping) {
        // Parked and acknowledged: the same statement would fail again forever. A bug in the
        // bridge (not a FrameError, not the data tier) is parked the same way.
        const refused = e instanceof StoreRefused
        if (!refused) this.log.error({ err: e as Error, meterId }, "ingest failed on this frame")
        const code = await this.reject(
          topic,
          meterId,
          new FrameError("CM_ERR_STORE_REFUSED", (e as Error).message),
          payload,
          at,
        )
        await this.ackIfDecodable(meterId, payload, t.kind)
        return code
      }
      throw e
    }
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

  private async readings(
    meterId: string,
    meter: MeterRow,
    frame: ReadingsFrame,
    sha256: string,
    payload: Uint8Array,
    topic: string,
    at: Date,
  ): Promise<IngestOutcome> {
    this.checkWindow(meter, frame, at)
    const rows = expandReadings(meterId, frame, meter.boot === frame.boot ? meter.uptimeEpochMs : null, at)
    for (const r of rows) {
      const bad = outOfRange(r)
      if (bad) throw new FrameError("CM_ERR_FIELD", bad)
    }
    const touched = await this.durable("touch", () => this.store.touchMeter(meterId, at))
    if (touched.inactive) await this.active(meterId, at)
    const t0 = performance.now()
    const outcome = await this.durable("readings", () =>
      this.store.insertReadings({ meterId, boot: frame.boot, seq: frame.seq, sha256 }, rows, at),
    )
    this.metrics.storeLatency.observe((performance.now() - t0) / 1000)
    if (outcome.kind === "stored") {
      this.metrics.framesStored.inc({ kind: "readings" })
      this.metrics.readingsStored.inc(rows.length)
      const last = rows[rows.length - 1]
      this.metrics.ingestLag.observe(Math.max(0, (Date.now() - last.ts.getTime()) / 1000 - last.intervalS))
    }
    this.log.debug({ meterId, boot: frame.boot, seq: frame.seq, outcome: outcome.kind }, "readings frame")
    const result = await this.settle(meterId, frame, outcome, sha256, payload, topic, at)
    this.checkClock(meterId, frame, at)
    return result
  }

  private async alarm(
    meterId: string,
    meter: MeterRow,
    frame: AlarmFrame,
    sha256: string,
    payload: Uint8Array,
    topic: string,
    at: Date,
  ): Promise<IngestOutcome> {
    this.checkWindow(meter, frame, at)
    const touched = await this.durable("touch", () => this.store.touchMeter(meterId, at))
    if (touched.inactive) await this.active(meterId, at)
    const ts = frame.timeSynced ? new Date(frame.timeS * 1000) : at
    const event = {
      meterId,
      boot: frame.boot,
      seq: frame.seq,
      type: frame.type,
      active: frame.active,
      ts,
      value: frame.value,
    }
    const outcome = await this.durable("alarm", () => this.store.insertAlarm(event, at, sha256))
    if (outcome.kind === "stored") this.metrics.framesStored.inc({ kind: "alarm" })
    return this.settle(meterId, frame, outcome, sha256, payload, topic, at)
  }

  /**
   * After the ledger's answer: stored and duplicate frames are acknowledged to the meter; a
   * conflict (same id, other content) is acknowledged too, so the meter's queue drains, but it is
   * never dropped unseen: dead-lettered with both hashes, counted, logged at warn, and raised as
   * a FRAME_CONFLICT bridge alarm on the meter.
   */
  private async settle(
    meterId: string,
    frame: ReadingsFrame | AlarmFrame,
    outcome: FrameOutcome,
    sha256: string,
    payload: Uint8Array,
    topic: string,
    at: Date,
  ): Promise<IngestOutcome> {
    if (outcome.kind === "duplicate") this.metrics.framesDuplicate.inc()
    if (outcome.kind === "conflict") {
      const detail = `(boot ${frame.boot}, seq ${frame.seq}) was stored with content ${outcome.storedSha256.slice(0, 16)}…, this is ${sha256.slice(0, 16)}…`
      await this.reject(topic, meterId, new FrameError("CM_ERR_CONFLICT", detail), payload, at, outcome.storedSha256)
      if (
        await this.durable("conflict alarm", () =>
          this.store.raiseBridgeAlarm(meterId, "FRAME_CONFLICT", frame.seq, at),
        )
      )
        this.log.warn({ meterId, boot: frame.boot, seq: frame.seq }, "FRAME_CONFLICT alarm raised")
    }
    await this.ack(meterId, frame.boot, frame.seq)
    return outcome.kind === "conflict" ? "CM_ERR_CONFLICT" : outcome.kind
  }

  private async birth(
    meterId: string,
    meter: MeterRow,
    frame: Extract<ReturnType<typeof decodeUplink>, { kind: "birth" }>,
    at: Date,
  ): Promise<IngestOutcome> {
    if (meter.boot !== null && frame.boot > meter.boot + MAX_BOOT_JUMP)
      throw new FrameError(
        "CM_ERR_BOOT",
        `birth of boot ${frame.boot}, more than ${MAX_BOOT_JUMP} after boot ${meter.boot}`,
      )
    if (frame.keyIndex !== null && frame.boot === meter.boot && frame.link <= (meter.birthLink ?? 0))
      throw new FrameError(
        "CM_ERR_REPLAY",
        `birth of connection ${frame.link}; connection ${meter.birthLink} was born already`,
      )
    if (meter.boot !== null && frame.boot < meter.boot) {
      // A re-flashed or wiped meter restarts its boot counter: its frames may collide with
      // stored ones; such collisions are conflicts (dead-lettered, alarmed), never dropped unseen.
      this.metrics.bootRegressions.inc()
      this.log.warn(
        { meterId, boot: frame.boot, previousBoot: meter.boot },
        "boot counter went back (re-flash or settings wipe?)",
      )
    }
    const uptimeEpochMs = at.getTime() - frame.uptimeS * 1000
    await this.durable("birth", () =>
      this.store.recordBirth(
        meterId,
        {
          firmware: frame.firmware,
          board: frame.board,
          boot: frame.boot,
          seq: frame.seq,
          link: frame.link,
          intervalS: frame.intervalS,
          batch: frame.batch,
          uptimeEpochMs,
        },
        at,
      ),
    )
    if (meter.inactive) await this.active(meterId, at)
    this.metrics.framesStored.inc({ kind: "birth" })
    this.log.info({ meterId, boot: frame.boot, firmware: frame.firmware, queued: frame.queued }, "meter birth")
    await this.downlink(meterId, "time", this.encode(meterId, { time: { unixMs: Date.now(), uptimeS: frame.uptimeS } }))
    return "stored"
  }

  /** A frame sealed with the next key: the meter has switched (key rotation); the next key is now the key. */
  private async keyConfirmed(meterId: string, meter: MeterRow) {
    await this.durable("key rotation", () => this.store.setSeal(meterId, { key: meter.seal.nextKey, nextKey: null }))
    meter.seal = { ...meter.seal, key: meter.seal.nextKey, nextKey: null }
    this.log.info({ meterId }, "key rotation confirmed by the meter")
  }

  /** A parked readings or alarm frame is acknowledged to the meter when its id can be read. */
  private async ackIfDecodable(meterId: string, payload: Uint8Array, kind: string) {
    if (kind !== "readings" && kind !== "alarm") return
    try {
      // the clear envelope is enough: boot and seq are readable in sealed frames too
      const u = citymeter.v1.Uplink.decode(payload)
      if (u.seq) await this.ack(meterId, Number(u.boot), Number(u.seq))
    } catch {
      // not decodable: nothing to acknowledge
    }
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

  /** Frames from a meter marked inactive: clear it (once, whichever bridge instance gets there first). */
  private async active(meterId: string, at: Date) {
    if (await this.durable("active", () => this.store.markActive(meterId, at)))
      this.log.info({ meterId }, "meter active again; INACTIVE alarm cleared")
  }

  /** A downlink for the meter, sealed under its key when its policy is sealed. */
  private encode(meterId: string, d: citymeter.v1.Downlink.$Properties) {
    return encodeDownlink(d, this.downlinkKeys.get(meterId) ?? undefined)
  }

  private async ack(meterId: string, boot: number, seq: number) {
    await this.downlink(meterId, "ack", this.encode(meterId, { ack: { boot, seq } }))
  }

  /**
   * Downlinks are queued, not awaited: mqtt.js reads no packet (the downlink's PUBACK included)
   * until the current message's handler returns. They are best effort: a lost ack makes the meter
   * resend, and the resend is deduplicated.
   */
  private async downlink(meterId: string, kind: DownKind, payload: Uint8Array) {
    this.send(meterId, kind, payload).catch((e: Error) =>
      this.log.warn({ meterId, kind, err: e.message }, "downlink failed"),
    )
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
    }
    if (water !== undefined) water -= v.volumeMl ?? 0
    if (energy !== undefined) energy -= v.energyWh ?? 0
  }
  return rows
}
