// A meter's simulated pulse output as a board's pulse input sees it (issue 20): on a board,
// jacdac-c's button service samples the pin in C every 9 ms (services/button.c) and sends DOWN at
// the first sample that finds the contact closed and UP, with how long it was closed, at the first
// that finds it open. Here a jacdac-ts button server sends the same events, sampling the pulse
// train on the same 9 ms grid (a random phase), so the firmware counts them with its board code
// (firmware/pulses.ts). The samples are taken on the train's own clock, not when a host timer fires:
// a late timer delays the events but changes none of them (the board's main loop can also be late,
// which the board tests measure; the simulator does not model it).
import { SRV_BUTTON, SensorServer, jdpack } from "jacdac-ts"
import { PULSE_SAMPLE_MS } from "../../bridge/src/tunables/pulse-limits.js"
import { PulseTrain } from "./physics.js"

/** jacdac spec button.md: events down (0x01) and up (0x02, time: u32 ms). */
const EV_DOWN = 0x01
const EV_UP = 0x02

export class SimPulseOutput {
  /** The button server the firmware's pulse role binds (`flowPulse`, `s0Pulse`). */
  readonly button = new SensorServer<[number]>(SRV_BUTTON, { readingValues: [0] })
  /** DOWN and UP events sent. */
  downs = 0
  ups = 0
  private timer?: NodeJS.Timeout
  /** The last sample taken, ms on the train's clock, and the level it found. */
  private sampledAt: number
  private level = 0
  private downAt = 0
  private live = false

  constructor(
    readonly train: PulseTrain,
    nowMs: number,
    readonly sampleMs = PULSE_SAMPLE_MS,
  ) {
    // the sampling grid's phase against the train: any
    this.sampledAt = nowMs - Math.random() * sampleMs
  }

  /** Starts sending events (the VM is up); the level at this moment is the baseline, as at a board's boot. */
  start(nowMs: number) {
    this.live = true
    this.catchUp(nowMs, false)
    this.schedule()
  }

  stop() {
    this.live = false
    clearTimeout(this.timer)
  }

  /** From `nowMs` on, the train runs at `rate` (mL/min, or Wh/min for S0): samples up to now first. */
  setRate(nowMs: number, rate: number) {
    this.catchUp(nowMs, this.live)
    this.train.setFlow(nowMs, rate)
    if (this.live) this.schedule()
  }

  /**
   * Takes every sample due up to `nowMs` in order, sending an event at each change when `send`.
   * Only this object moves the train's clock (level, nextChangeMs), and never past the last
   * sample, so no change between two samples is skipped.
   */
  private catchUp(nowMs: number, send: boolean) {
    for (;;) {
      const at = this.sampledAt + this.sampleMs
      if (at > nowMs) return
      this.sampledAt = at
      const v = this.train.level(at)
      if (v !== this.level) {
        this.level = v
        this.button.reading.setValues([v])
        if (v) this.downAt = at
        if (send && v) {
          this.downs++
          void this.button.sendEvent(EV_DOWN)
        } else if (send) {
          this.ups++
          void this.button.sendEvent(EV_UP, jdpack<[number]>("u32", [Math.round(at - this.downAt)]))
        }
      }
      // no sample before the next change can find another level: skip to the last one before it
      const k = Math.floor((Math.min(this.train.nextChangeMs(at), nowMs) - at) / this.sampleMs)
      if (k > 1) this.sampledAt = at + (k - 1) * this.sampleMs
    }
  }

  private schedule() {
    clearTimeout(this.timer)
    const change = this.train.nextChangeMs(this.sampledAt)
    if (!Number.isFinite(change)) return
    const at = Math.max(change, this.sampledAt + this.sampleMs)
    this.timer = setTimeout(
      () => {
        this.catchUp(performance.now(), true)
        this.schedule()
      },
      Math.max(0, Math.ceil(at - performance.now())),
    )
    this.timer.unref()
  }
}
