// The ADE7953's counts per volt, ampere and watt (Analog Devices data sheet ADE7953, Rev. B/C): from
// a front end's circuit or its published constants, and a unit's trim against a reference meter
// (settings ADE_CAL); the driver is ade7953.ts.
//
// Data sheet facts used here:
// - "Active Energy Calculation": active power is integrated into AENERGYA at up to ≈206.9 kHz with
//   full-scale inputs; with full-scale inputs AWATT reads ≈4,862,401. The 24-bit AENERGYA wraps.
import { readSetting } from "@devicescript/settings"

/** Data sheet "Active Energy Calculation": energy counts per second per AWATT count. */
export const ENERGY_RATE_PER_AWATT = 206900 / 4862401
/**
 * Data sheet full scale (PGA gain 1): 0.5 V peak (0.3536 V rms) at an input gives IRMSA/VRMS
 * 9,032,007; both inputs at full scale in phase give AWATT 4,862,401 ("Current Channel RMS",
 * "Voltage Channel RMS", "Active Power Calculation").
 */
export const FULL_SCALE = { inputVrms: 0.5 / Math.SQRT2, rms: 9032007, awatt: 4862401 }

/**
 * Counts per V, A and W of a front end from its circuit: line volts to input volts
 * (`voltsPerLineVolt`, a divider's ratio) and amperes to input volts (`voltsPerAmp`, a shunt's ohms
 * or a CT's burden over its turns ratio), from the data sheet's full scale (FULL_SCALE).
 */
export function frontEndCounts(voltsPerLineVolt: number, voltsPerAmp: number): Ade7953Calibration {
    const perInputV = FULL_SCALE.rms / FULL_SCALE.inputVrms
    return {
        countsPerV: perInputV * voltsPerLineVolt,
        countsPerA: perInputV * voltsPerAmp,
        countsPerW: (FULL_SCALE.awatt * voltsPerLineVolt * voltsPerAmp) / (FULL_SCALE.inputVrms * FULL_SCALE.inputVrms),
    }
}

/**
 * Register counts per unit of the analog front end: they depend on the shunt or CT, the voltage
 * divider and the PGA gains, so they are per board and need a calibration against a reference meter.
 */
export interface Ade7953Calibration {
    countsPerV: number
    countsPerA: number
    countsPerW: number
}

/**
 * The Shelly 2.5 / Shelly EM front end with every gain at its default (PGA 1, xGAIN 0x400000): VRMS
 * 26000 counts/V, IRMSA 100000 counts/A, AWATT 154 counts/W — the figures Tasmota (xnrg_07) and
 * ESPHome (ade7953) ship for those plugs, measured there, not checked here (no hardware).
 */
export const SHELLY_FRONT_END: Ade7953Calibration = { countsPerV: 26000, countsPerA: 100000, countsPerW: 154 }

/**
 * AENERGYA counts per Wh: AWATT counts/W × the data sheet's accumulation rate per AWATT count ×
 * 3600 s. For the Shelly front end 23,590 (ESPHome's empirical 154² = 23,716 is 0.5 % off).
 */
export function energyCountsPerWh(c: Ade7953Calibration): number {
    return c.countsPerW * ENERGY_RATE_PER_AWATT * 3600
}

/** Longest time between two energy reads before AENERGYA (24 bit) can wrap unseen, at `powerW`. */
export function maxReadGapS(c: Ade7953Calibration, powerW: number): number {
    return 2 ** 24 / (powerW * c.countsPerW * ENERGY_RATE_PER_AWATT)
}

/**
 * A unit's calibration against a reference meter (settings ADE_CAL): gain in ppm (1,000,000 = 1) and
 * offset in register counts, of voltage, current and active power: value = (register − offset) ×
 * gain / counts per unit. Energy takes the power gain; the power offset corrects the power reading
 * only (a no-load offset in the energy register needs the chip's own AWATTOS, not written here).
 */
export interface Ade7953Trim {
    vGainPpm: number
    vOffset: number
    iGainPpm: number
    iOffset: number
    pGainPpm: number
    pOffset: number
}

export const NO_TRIM: Ade7953Trim = {
    vGainPpm: 1000000,
    vOffset: 0,
    iGainPpm: 1000000,
    iOffset: 0,
    pGainPpm: 1000000,
    pOffset: 0,
}
/** Settings key of the unit's calibration: JSON [vGainPpm, vOffset, iGainPpm, iOffset, pGainPpm, pOffset]. */
export const ADE_CAL_KEY = "ADE_CAL"

/** Why a calibration is unusable (gains 0.5..2, offsets within ±1e6 counts), or undefined. */
export function trimError(t: Ade7953Trim): string {
    for (const g of [t.vGainPpm, t.iGainPpm, t.pGainPpm])
        if (typeof g !== "number" || Math.round(g) !== g || g < 500000 || g > 2000000)
            return `ADE_CAL gains must be whole ppm in 500000..2000000 (got ${g})`
    for (const o of [t.vOffset, t.iOffset, t.pOffset])
        if (typeof o !== "number" || Math.round(o) !== o || Math.abs(o) > 1000000)
            return `ADE_CAL offsets must be whole counts within +-1000000 (got ${o})`
    return undefined
}

/** The unit's calibration from settings; none (or an unusable one, logged): NO_TRIM. */
export async function loadAde7953Trim(): Promise<Ade7953Trim> {
    const a = await readSetting<number[]>(ADE_CAL_KEY, undefined)
    if (a === undefined || a === null) return NO_TRIM
    const t: Ade7953Trim =
        Array.isArray(a) && a.length === 6
            ? { vGainPpm: a[0], vOffset: a[1], iGainPpm: a[2], iOffset: a[3], pGainPpm: a[4], pOffset: a[5] }
            : undefined
    const why = t ? trimError(t) : "ADE_CAL must be [vGainPpm, vOffset, iGainPpm, iOffset, pGainPpm, pOffset]"
    if (why) {
        console.log(`citymeter: settings refused: ${why}; the ADE7953 runs uncalibrated`)
        return NO_TRIM
    }
    return t
}
