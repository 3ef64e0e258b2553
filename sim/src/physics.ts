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
