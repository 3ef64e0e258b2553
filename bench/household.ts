// A seeded, deterministic household for the year bench (bench/year.ts): one meter's water and
// electricity readings, 15 minutes at a time, shaped like a home's rather than constant (constant
// values would make compression look far better than it is). The model, also in bench/README.md
// ("A year of a city"):
// - water: a draw in an interval is likely in the morning and evening, rare at night; its volume is
//   0.5 L plus an exponential tail (mean ≈ 9 L × the household's size), at most 60 L, in mL; the
//   register is the cumulative volume from a seeded start;
// - electricity: a base load (60–220 W) with ±15 W noise, a fridge cycling on (+90 W) in runs,
//   lights in the evening, and appliances (0.4–2.5 kW for 15 min to 2 h) started at random, more
//   often by day; energy per interval is the mean power / 4 in Wh, rounded, and its register
//   cumulative;
// - voltage: 230.0 V with a slow random walk (±8 V at most), a dip at the evening peak and ±0.5 V of
//   noise, in dV;
// - pressure: 300 kPa less up to 15 kPa at the morning and evening demand peaks, ±400 Pa of noise;
//   the interval's minimum and maximum lie up to 1.5 kPa around the mean (a draw pulls the
//   minimum down 3 kPa more), in Pa.
import type { ReadingRow } from "../bridge/src/store/store.js"

/** xorshift32: a small, fast, seeded generator (not for cryptography). */
export function seeded(seed: number): () => number {
  let x = seed >>> 0 || 0x9e3779b9
  return () => {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    return x / 4294967296
  }
}

/** A bell around hour `at` (width `w` hours), wrapped around the day. */
const bell = (h: number, at: number, w: number) => {
  const d = Math.min(Math.abs(h - at), 24 - Math.abs(h - at))
  return Math.exp(-(d * d) / (2 * w * w))
}

/** Demand across the day, 0..1: the morning and evening peaks. */
const demand = (h: number) => Math.max(bell(h, 7.5, 1.5), bell(h, 19.5, 2))

/** The channels of one interval: the ReadingRow fields a household meter fills. */
export type Interval = Pick<
  ReadingRow,
  | "volumeMl"
  | "reverseMl"
  | "waterTotalMl"
  | "energyWh"
  | "energyTotalWh"
  | "powerW"
  | "voltageDv"
  | "pressureMinPa"
  | "pressureAvgPa"
  | "pressureMaxPa"
>

export class Household {
  private readonly rnd: () => number
  private readonly size: number
  private readonly baseW: number
  private waterTotalMl: number
  private energyTotalWh: number
  private driftDv = 0
  private fridgeOn = false
  private applianceW = 0
  private applianceLeft = 0

  constructor(seed: number) {
    this.rnd = seeded(seed * 2654435761 + 1)
    this.size = 0.6 + this.rnd() * 0.8
    this.baseW = 60 + Math.round(this.rnd() * 160)
    this.waterTotalMl = Math.round(this.rnd() * 300_000_000)
    this.energyTotalWh = Math.round(this.rnd() * 40_000_000)
  }

  /** The interval that starts at `ts` (ms since the epoch); call in time order. */
  next(ts: number): Interval {
    const r = this.rnd
    const h = (((ts / 3_600_000) % 24) + 1) % 24 // local hour, UTC+1
    const d = demand(h)
    // water
    const pDraw = h < 5 ? 0.02 : 0.08 + 0.4 * d
    const volumeMl = r() < pDraw ? Math.min(60_000, Math.round(500 - Math.log(1 - r()) * 9_000 * this.size)) : 0
    this.waterTotalMl += volumeMl
    // electricity
    if (r() < 0.25) this.fridgeOn = !this.fridgeOn
    if (this.applianceLeft > 0) this.applianceLeft--
    else if (r() < (h < 6 ? 0.01 : 0.04 + 0.1 * d)) {
      this.applianceW = 400 + Math.round(r() * 2100)
      this.applianceLeft = 1 + Math.floor(r() * 8)
    } else this.applianceW = 0
    const lightsW = h >= 17 && h < 23 ? 60 + 80 * d : 0
    const powerW = Math.max(
      0,
      Math.round(this.baseW + (r() - 0.5) * 30 + (this.fridgeOn ? 90 : 0) + lightsW + this.applianceW),
    )
    const energyWh = Math.round(powerW / 4)
    this.energyTotalWh += energyWh
    // voltage: a slow walk, the evening dip, noise
    this.driftDv = Math.max(-80, Math.min(80, this.driftDv + (r() - 0.5) * 4))
    const voltageDv = Math.round(2300 + this.driftDv - 40 * bell(h, 19.5, 2) + (r() - 0.5) * 10)
    // pressure
    const pressureAvgPa = Math.round(300_000 - 15_000 * d + (r() - 0.5) * 800)
    const pressureMinPa = pressureAvgPa - Math.round(r() * 1_500) - (volumeMl > 0 ? 3_000 : 0)
    const pressureMaxPa = pressureAvgPa + Math.round(r() * 1_500)
    return {
      volumeMl,
      reverseMl: 0,
      waterTotalMl: this.waterTotalMl,
      energyWh,
      energyTotalWh: this.energyTotalWh,
      powerW,
      voltageDv,
      pressureMinPa,
      pressureAvgPa,
      pressureMaxPa,
    }
  }
}
