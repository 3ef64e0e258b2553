// Sensor physics for the simulator: daily demand curves, pressure that sags with demand,
// electricity load profiles. Rates are per simulated time; the scenario runner integrates them.

/** Smooth bump centred on `at` hours with a width of `w` hours (a Gaussian without the constant). */
function bump(hour: number, at: number, w: number): number {
  // the day wraps: measure the distance on the 24 h circle
  const d = Math.min(Math.abs(hour - at), 24 - Math.abs(hour - at))
  return Math.exp(-(d * d) / (2 * w * w))
}

/** Household water demand, mL/min: morning and evening peaks, a little at noon, quiet nights. */
export function householdWaterMlMin(hour: number): number {
  return Math.round(9000 * bump(hour, 7.5, 0.8) + 6000 * bump(hour, 19.5, 1.2) + 2500 * bump(hour, 12.5, 1))
}

/** Commercial (office) water demand, mL/min: flat through opening hours, nothing at night. */
export function commercialWaterMlMin(hour: number): number {
  const open = hour >= 8 && hour < 18 ? 1 : 0
  return Math.round(open * (4000 + 3000 * bump(hour, 12.5, 1.5)))
}

/** Household electricity, W: base load, morning and evening peaks. */
export function householdPowerW(hour: number): number {
  return Math.round(180 + 900 * bump(hour, 7.5, 1) + 1600 * bump(hour, 19.5, 1.5))
}

/** Line pressure, Pa: static head minus a friction loss that grows with the square of the flow. */
export function linePressurePa(flowMlMin: number, staticPa = 420_000, lossPaPerLmin2 = 60): number {
  const lMin = flowMlMin / 1000
  return Math.max(0, Math.round(staticPa - lossPaPerLmin2 * lMin * lMin))
}

/** Mains voltage with a small daily swing, dV (230 V nominal). */
export function mainsVoltageDv(hour: number): number {
  return Math.round(2300 + 40 * Math.sin(((hour - 4) / 24) * 2 * Math.PI))
}

/** A meter's pulse output: one contact closure per `1000 / pulsesPerL` mL through the meter. */
export interface PulseOutput {
  /** Pulses per litre (K-factor); utility reed meters: 1 (or 0.1, one pulse per 10 L). */
  pulsesPerL: number
  /** How long the contact stays closed per pulse, ms. */
  widthMs: number
  /** How far the dial has turned towards the first pulse, as a fraction of a pulse (0 ≤ phase < 1). */
  phase?: number
}

/** Reed contacts close for a good part of a litre's turn; 150 ms is well above the boards' shortest countable pulse (20 ms). */
export const DEFAULT_PULSE_WIDTH_MS = 150

/**
 * The pulse train of a meter's output at a flow that changes over time: a pulse begins each time
 * the volume through the meter reaches the next multiple of the pulse volume, and the contact stays
 * closed `widthMs` from then. A pulse that begins while the contact is still closed (width longer
 * than the period) only keeps it closed: no reader can see it (`merged`).
 * Time is explicit (ms, any monotonic clock): the simulator drives it from timers, tests directly.
 */
export class PulseTrain {
  readonly mlPerPulse: number
  /** Volume through the meter, mL (not rounded). */
  volumeMl = 0
  /** Pulses begun. */
  pulses = 0
  /** Pulses that began while the contact was still closed. */
  merged = 0
  private rateMlPerMs = 0
  private highUntil = -Infinity

  constructor(
    readonly output: PulseOutput,
    private t: number,
  ) {
    if (!(output.pulsesPerL > 0) || !(output.widthMs > 0)) throw new Error("pulse output: pulsesPerL and widthMs > 0")
    const phase = output.phase ?? 0
    if (!(phase >= 0 && phase < 1)) throw new Error("pulse output: 0 <= phase < 1")
    this.mlPerPulse = 1000 / output.pulsesPerL
  }

  /** Volume at which the next pulse begins (computed from the count: no drift from summing). */
  private get nextAtMl() {
    return (this.pulses + 1 - (this.output.phase ?? 0)) * this.mlPerPulse
  }

  /** Runs the meter up to `nowMs` at the current flow, beginning every pulse on the way. */
  advance(nowMs: number) {
    if (nowMs <= this.t) return
    const end = this.volumeMl + this.rateMlPerMs * (nowMs - this.t)
    for (let at = this.nextAtMl; at <= end; at = this.nextAtMl) {
      const atMs = this.t + (at - this.volumeMl) / this.rateMlPerMs
      if (atMs < this.highUntil) this.merged++
      this.highUntil = atMs + this.output.widthMs
      this.pulses++
    }
    this.volumeMl = end
    this.t = nowMs
  }

  /** From `nowMs` on, the flow is `mlMin` (mL/min; a reed meter turns one way: below 0 is 0). */
  setFlow(nowMs: number, mlMin: number) {
    this.advance(nowMs)
    this.rateMlPerMs = Math.max(0, mlMin) / 60000
  }

  /** Contact level at `nowMs`: 1 while a pulse is on. */
  level(nowMs: number): 0 | 1 {
    this.advance(nowMs)
    return nowMs < this.highUntil ? 1 : 0
  }

  /** When the level may next change after `nowMs` at the current flow (Infinity: not before the flow changes). */
  nextChangeMs(nowMs: number): number {
    this.advance(nowMs)
    if (nowMs < this.highUntil) return this.highUntil
    if (this.rateMlPerMs <= 0) return Infinity
    return this.t + (this.nextAtMl - this.volumeMl) / this.rateMlPerMs
  }
}
