// Pulse inputs: counted from button services sampling the pins in C (firmware/pulses.ts). Each
// board's limits (proto/tunables.json pulseInputs), the highest rates they count, and why a pulse
// constant cannot be counted on a board.
import schema from "../../../proto/tunables.json" with { type: "json" }
import type { TunableValues } from "./schema.js"

/** How often a board's button service samples a pulse pin in C (jacdac-c services/button.c). */
export const PULSE_SAMPLE_MS = schema.pulseInputs.sampleMs

export interface PulseLimits {
  /** Shortest pulse, and shortest gap between pulses, counted, ms. */
  minPulseMs: number
  /** Highest rate counted (pulses of minPulseMs), per second. */
  maxPulseHz: number
  /** How the figures were found: measured (and how) or derived. */
  source: string
}
/** Each board's pulse input limits (proto/tunables.json pulseInputs.boards). */
export const PULSE_LIMITS: Readonly<Record<string, PulseLimits>> = schema.pulseInputs.boards
/** The limits of a board without figures of its own (unknown, the simulator): the strictest of all. */
export const STRICTEST_PULSE_LIMITS: PulseLimits = {
  minPulseMs: Math.max(...Object.values(PULSE_LIMITS).map((l) => l.minPulseMs)),
  maxPulseHz: Math.min(...Object.values(PULSE_LIMITS).map((l) => l.maxPulseHz)),
  source: "the strictest of the boards' figures",
}
/** A board's pulse input limits; an unknown board (or none) gets the strictest. */
export const pulseLimitsOf = (board?: string | null): PulseLimits =>
  (board && Object.hasOwn(PULSE_LIMITS, board) ? PULSE_LIMITS[board] : undefined) ?? STRICTEST_PULSE_LIMITS

/** Pulses per second a board counts for pulses of `pulseMs`: a sample inside each pulse and each gap. */
export function maxPulseHz(pulseMs: number, board?: string | null): number {
  const l = pulseLimitsOf(board)
  return Math.min(l.maxPulseHz, 1000 / (Math.max(pulseMs, l.minPulseMs) + l.minPulseMs))
}
/** Highest flow (L/min) a pulse constant can be counted at. */
export const maxCountableFlowLmin = (pulsesPerL: number, pulseMs: number, board?: string | null) =>
  (maxPulseHz(pulseMs, board) * 60) / pulsesPerL
/** Highest power (W) an S0 constant can be counted at. */
export const maxCountablePowerW = (impPerKwh: number, pulseMs: number, board?: string | null) =>
  (maxPulseHz(pulseMs, board) * 3.6e6) / impPerKwh

export const round1 = (x: number) => Math.round(x * 10) / 10

/**
 * Why these pulse settings cannot be counted on `board` (unknown: the strictest board), one
 * sentence each; empty when they can. The same rule as firmware/config.ts pulseLimitErrors
 * (tests/unit/tunables.test.ts compares them).
 */
export function pulseLimitErrors(
  v: Pick<TunableValues, "pulsesPerL" | "maxFlowLmin" | "impPerKwh" | "maxPowerW" | "pulseMs">,
  board?: string | null,
): string[] {
  const out: string[] = []
  const l = pulseLimitsOf(board)
  const on = board && Object.hasOwn(PULSE_LIMITS, board) ? board : "every board"
  if (v.pulseMs < l.minPulseMs)
    out.push(
      `PULSE_MS=${v.pulseMs}: ${on} counts pulses of at least ${l.minPulseMs} ms (its pins are sampled every ${PULSE_SAMPLE_MS} ms), shorter ones are missed (count them with a hardware counter or a metering IC)`,
    )
  const hz = maxPulseHz(v.pulseMs, board)
  const width = Math.max(v.pulseMs, l.minPulseMs)
  const flowHz = (v.pulsesPerL * v.maxFlowLmin) / 60
  if (flowHz > hz)
    out.push(
      `PULSES_PER_L=${v.pulsesPerL} at MAX_FLOW_LMIN=${v.maxFlowLmin} is ${round1(flowHz)} pulses/s; ${on} counts at most ${round1(hz)} pulses/s of ${width} ms (max ${round1(maxCountableFlowLmin(v.pulsesPerL, v.pulseMs, board))} L/min at this constant)`,
    )
  const s0Hz = (v.impPerKwh * v.maxPowerW) / 3.6e6
  if (s0Hz > hz)
    out.push(
      `IMP_PER_KWH=${v.impPerKwh} at MAX_POWER_W=${v.maxPowerW} is ${round1(s0Hz)} impulses/s; ${on} counts at most ${round1(hz)}/s of ${width} ms (max ${Math.floor(maxCountablePowerW(v.impPerKwh, v.pulseMs, board))} W at this constant)`,
    )
  return out
}
