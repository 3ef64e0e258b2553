// Uplink ingest: topic + payload → validated frame → committed rows → downlink (ack / time).
// Bad input is counted, logged with its meter and reason, and kept as a dead letter; it never
// throws. A data-tier failure is retried until it succeeds, so the MQTT acknowledgement (sent by
// the caller after handle() resolves) always follows the commit.
import type { Logger } from "pino"
import { FrameError, decodeUplink, encodeDownlink, type ReadingsFrame } from "./codec.js"
import type { Metrics } from "./metrics.js"
import type { ReadingRow, Store } from "./store/store.js"
import { parseUpTopic, type DownKind } from "./topics.js"

export type SendDownlink = (meterId: string, kind: DownKind, payload: Uint8Array) => Promise<void>

export interface IngestOptions {
  /** Accept frames from meters the data tier does not know yet (registering them). Default true. */
  autoRegister?: boolean
  /** Delay between retries of a failed data-tier operation, ms. */
  retryMs?: number
}

/** A live (not replayed) synced frame whose end is further than this from its arrival has a wrong clock. */
export const CLOCK_SKEW_TOLERANCE_MS = 120_000
const CLOCK_CORRECTION_EVERY_MS = 60_000

export class Ingest {
  private stopping = false
  private lastCorrection = new Map<string, number>()

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

  /** Retries a data-tier operation until it succeeds (or the bridge stops). */
  private async durable<T>(what: string, op: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await op()
      } catch (e) {
        if (this.stopping) throw e
        this.metrics.storeErrors.inc()
        if (attempt % 10 === 0)
          this.log.error({ err: (e as Error).message, what, attempt }, "data tier failed; retrying")
        await new Promise((r) => setTimeout(r, Math.min(5000, (this.opts.retryMs ?? 200) * (1 + attempt))))
      }
    }
  }

  private async reject(topic: string, meterId: string | null, err: FrameError, payload: Uint8Array, at: Date) {
    this.metrics.framesRejected.inc({ reason: err.code })
    this.log.warn({ topic, meterId, reason: err.code, detail: err.message, bytes: payload.length }, "frame rejected")
    await this.durable("dead letter", () =>
      this.store.addDeadLetter({ topic, meterId, reason: err.code, detail: err.message, payload }, at),
    )
  }

  async handle(topic: string, payload: Uint8Array, at = new Date()): Promise<void> {
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
    let frame
    try {
      frame = decodeUplink(t.kind, payload, at.getTime() / 1000)
    } catch (e) {
      if (e instanceof FrameError) return this.reject(topic, meterId, e, payload, at)
      throw e
    }
    if (this.opts.autoRegister === false && !(await this.durable("meter", () => this.store.getMeter(meterId))))
      return this.reject(
        topic,
        meterId,
        new FrameError("CM_ERR_UNKNOWN_METER", "meter is not provisioned"),
        payload,
        at,
      )

    switch (frame.kind) {
      case "readings": {
        const meter = await this.durable("touch", () => this.store.touchMeter(meterId, at))
        if (meter.inactive) await this.active(meterId, at)
        const rows = expandReadings(meterId, frame, meter.boot === frame.boot ? meter.uptimeEpochMs : null, at)
        const t0 = performance.now()
        const stored = await this.durable("readings", () =>
          this.store.insertReadings(meterId, frame.boot, frame.seq, rows, at),
        )
        this.metrics.storeLatency.observe((performance.now() - t0) / 1000)
        if (stored) {
          this.metrics.framesStored.inc({ kind: "readings" })
          this.metrics.readingsStored.inc(rows.length)
          const last = rows[rows.length - 1]
          this.metrics.ingestLag.observe(Math.max(0, (Date.now() - last.ts.getTime()) / 1000 - last.intervalS))
        } else this.metrics.framesDuplicate.inc()
        this.log.debug({ meterId, boot: frame.boot, seq: frame.seq, stored }, "readings frame")
        await this.ack(meterId, frame.boot, frame.seq)
        this.checkClock(meterId, frame, at)
        return
      }
      case "alarm": {
        const meter = await this.durable("touch", () => this.store.touchMeter(meterId, at))
        if (meter.inactive) await this.active(meterId, at)
        const ts = frame.timeSynced ? new Date(frame.timeS * 1000) : at
        const stored = await this.durable("alarm", () =>
          this.store.insertAlarm(
            {
              meterId,
              boot: frame.boot,
              seq: frame.seq,
              type: frame.type,
              active: frame.active,
              ts,
              value: frame.value,
            },
            at,
          ),
        )
        if (stored) this.metrics.framesStored.inc({ kind: "alarm" })
        else this.metrics.framesDuplicate.inc()
        await this.ack(meterId, frame.boot, frame.seq)
        return
      }
      case "birth": {
        const uptimeEpochMs = at.getTime() - frame.uptimeS * 1000
        await this.durable("birth", () =>
          this.store.recordBirth(
            meterId,
            {
              firmware: frame.firmware,
              board: frame.board,
              boot: frame.boot,
              intervalS: frame.intervalS,
              batch: frame.batch,
              uptimeEpochMs,
            },
            at,
          ),
        )
        await this.active(meterId, at)
        this.metrics.framesStored.inc({ kind: "birth" })
        this.log.info({ meterId, boot: frame.boot, firmware: frame.firmware, queued: frame.queued }, "meter birth")
        await this.downlink(meterId, "time", encodeDownlink({ time: { unixMs: Date.now(), uptimeS: frame.uptimeS } }))
        return
      }
      case "death": {
        await this.durable("death", () => this.store.setOnline(meterId, false, at))
        this.metrics.framesStored.inc({ kind: "death" })
        this.log.info({ meterId, boot: frame.boot }, "meter death")
        return
      }
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
    void this.downlink(meterId, "time", encodeDownlink({ time: { unixMs: Date.now() } }))
  }

  /** Frames from a meter marked inactive: clear it (once, whichever bridge instance gets there first). */
  private async active(meterId: string, at: Date) {
    if (await this.durable("active", () => this.store.markActive(meterId, at)))
      this.log.info({ meterId }, "meter active again; INACTIVE alarm cleared")
  }

  private async ack(meterId: string, boot: number, seq: number) {
    await this.downlink(meterId, "ack", encodeDownlink({ ack: { boot, seq } }))
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
