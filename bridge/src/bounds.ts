// What a meter's values can be: the range of each wire type and what each channel can physically
// measure. The codec checks decoded frames against these; the store's columns (store/columns.ts)
// intersect them with their SQL types. Neither side owns them, so both import them from here.

/** The .proto integer types the readings travel in. */
export type ProtoType = "uint32" | "sint32" | "uint64" | "sint64"

/** Range of each wire type. */
export const PROTO_RANGE: Record<ProtoType, [number, number]> = {
  uint32: [0, 2 ** 32 - 1],
  sint32: [-(2 ** 31), 2 ** 31 - 1],
  uint64: [0, 2 ** 64 - 1],
  sint64: [-(2 ** 63), 2 ** 63 - 1],
}

/** Physical plausibility, per channel. A value outside is a corrupt or forged frame, not a reading. */
export const PLAUSIBLE = {
  /** Water flow: 30 L/s ≈ 108 m³/h, above the overload flow (Q4) of a DN80 bulk meter. */
  flowMlPerS: 30_000,
  /** Water register: 10^14 mL = 100 million m³, a century of a DN300 main at full flow. */
  waterTotalMl: 1e14,
  /** Active power: 250 kW either way, a large three-phase commercial supply. */
  powerW: 250_000,
  /** Energy register: 10^12 Wh = 1 TWh, 400 years of that supply at full load. */
  energyTotalWh: 1e12,
  /** Mains RMS voltage: up to 500.0 V (decivolts). */
  voltageDv: 5000,
  /** Water pressure: up to 50 bar (Pa); mains run at 2–10 bar, sensors top out at 12–35 bar. */
  pressurePa: 5_000_000,
} as const
