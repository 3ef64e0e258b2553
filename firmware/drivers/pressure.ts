// Ratiometric 0.5–4.5 V pressure transducer on an ADC → pascals, with out-of-range detection (an
// open or shorted sensor reads outside its band). Exposes the citymeter Water Pressure service
// (services/waterpressure.md).
//
// Ratiometric: the transducer's output is a fraction of its own supply (10 % at zero, 90 % at full
// range on a 5 V supply), but the ADC measures it against its own reference. The nominal conversion
// assumes a 5.000 V supply: on 5.25 V a 10 bar sensor at 5 bar gives 2.625 V and reads 531 kPa.
// None of the boards measures the transducer's supply (on the Pico W, GP29/ADC3, the VSYS/3 input
// of the Pico, is shared with the CYW43 radio: devicescript-pico src/platform.c reads it once at
// boot to tell a Pico W from a Pico, and VSYS is not the transducer's 5 V rail anyway). So each unit
// gets a two-point calibration kept in settings (P_CAL, below): what the meter read at two reference
// pressures, taken on the installed supply. It absorbs the supply, the divider's tolerance and the
// ADC's gain and offset at that supply; what the supply drifts later is not corrected.
import * as ds from "@devicescript/core"
import { pinMode } from "@devicescript/gpio"
import { SensorServer, startServer } from "@devicescript/server"
import { readSetting } from "@devicescript/settings"

export interface PressureCalibration {
    /** Output at zero gauge pressure, volts (nominally 0.5). */
    zeroV: number
    /** Output change over the full range, volts (nominally 4.0). */
    spanV: number
    /** Full-range pressure, pascals (e.g. 1 MPa for a 10 bar sensor). */
    rangePa: number
    /** Volts at the ADC's full scale, after the divider: sensor volts = ratio × fullScaleV / divider. */
    fullScaleV: number
    divider: number
}

export const DEFAULT_CALIBRATION: PressureCalibration = {
    zeroV: 0.5,
    spanV: 4.0,
    rangePa: 1000000,
    fullScaleV: 3.3,
    divider: 0.66,
}

/**
 * A unit's two-point calibration: the sensor millivolts the meter computed with the nominal
 * conversion (its log line "pressure input … mV") at two reference pressures, in pascals.
 */
export interface PressurePoints {
    mv0: number
    pa0: number
    mv1: number
    pa1: number
}

/** Settings key of the two-point calibration: JSON [mv0, pa0, mv1, pa1], integers (≤ 13 characters). */
export const PRESSURE_CAL_KEY = "P_CAL"
/** Bounds the CLI and the firmware both check: millivolts at the sensor, pascals (the bridge's 50 bar). */
export const PRESSURE_CAL_MAX_MV = 6000
export const PRESSURE_CAL_MAX_PA = 5000000
/** The two reference pressures at least this far apart, or a millivolt of ADC noise moves the line too much. */
export const PRESSURE_CAL_MIN_SPAN_PA = 100000

/** Why these points cannot calibrate a transducer, or undefined when they can. */
export function pointsError(p: PressurePoints): string {
    const vals = [p.mv0, p.pa0, p.mv1, p.pa1]
    for (const v of vals)
        if (typeof v !== "number" || isNaN(v) || Math.round(v) !== v || v < 0)
            return `P_CAL values must be whole numbers >= 0 (got ${vals.join(", ")})`
    if (p.mv0 > PRESSURE_CAL_MAX_MV || p.mv1 > PRESSURE_CAL_MAX_MV)
        return `P_CAL millivolts must be at most ${PRESSURE_CAL_MAX_MV}`
    if (p.pa0 > PRESSURE_CAL_MAX_PA || p.pa1 > PRESSURE_CAL_MAX_PA)
        return `P_CAL pressures must be at most ${PRESSURE_CAL_MAX_PA} Pa`
    if (p.pa1 - p.pa0 < PRESSURE_CAL_MIN_SPAN_PA)
        return `P_CAL: the second pressure must be at least ${PRESSURE_CAL_MIN_SPAN_PA} Pa above the first`
    if (p.mv1 <= p.mv0) return `P_CAL: the output must rise with pressure (${p.mv0} mV, then ${p.mv1} mV)`
    return undefined
}

/** The calibration with zero and span from two points (the line through them); `c` gives the rest. */
export function withPoints(c: PressureCalibration, p: PressurePoints): PressureCalibration {
    const vPerPa = (p.mv1 - p.mv0) / 1000 / (p.pa1 - p.pa0)
    return {
        zeroV: p.mv0 / 1000 - p.pa0 * vPerPa,
        spanV: vPerPa * c.rangePa,
        rangePa: c.rangePa,
        fullScaleV: c.fullScaleV,
        divider: c.divider,
    }
}

/** The unit's points from settings; undefined when none are set or they are unusable (logged). */
export async function loadPressurePoints(): Promise<PressurePoints> {
    const a = await readSetting<number[]>(PRESSURE_CAL_KEY, undefined)
    if (a === undefined || a === null) return undefined
    const p: PressurePoints =
        Array.isArray(a) && a.length === 4 ? { mv0: a[0], pa0: a[1], mv1: a[2], pa1: a[3] } : undefined
    const why = p ? pointsError(p) : `P_CAL must be [mv0, pa0, mv1, pa1]`
    if (why) {
        console.log(`citymeter: settings refused: ${why}; the nominal 5.000 V conversion runs`)
        return undefined
    }
    return p
}

/** Sensor output volts from an ADC reading given as a 0..1 ratio of full scale. */
export function adcToVolts(ratio: number, c: PressureCalibration): number {
    return (ratio * c.fullScaleV) / c.divider
}

/** Volts → gauge pressure in Pa (clamped at 0 below the zero point). */
export function voltsToPa(v: number, c: PressureCalibration): number {
    const pa = Math.round(((v - c.zeroV) / c.spanV) * c.rangePa)
    return pa < 0 ? 0 : pa
}

/** True when the output lies outside the sensor's band by more than 0.1 V: open or short. */
export function outOfRange(v: number, c: PressureCalibration): boolean {
    return v < c.zeroV - 0.1 || v > c.zeroV + c.spanV + 0.1
}

/** Reads the pressure ADC: a 0..1 ratio of its full scale. */
export type PressureInput = () => Promise<number>

/** The pressure input through a board's analog sensor service (`analog:potentiometer`). */
export function serviceInput(adc: ds.Potentiometer): PressureInput {
    return async () => await adc.reading.read()
}

/**
 * The pressure input read straight from its pin in the GPIO AnalogIn mode. On the RP2040 this is the
 * path that leaves the pad right: the devicescript runtime's AnalogIn mode (impl_gpio.c setMode)
 * calls pin_setup_analog_input (devicescript-pico src/pins.c: pulls off, function NULL, input
 * buffer off), and the pin's value is adc_read_pin / 65536 — the same 0..1 ratio the analog
 * service gives. The analog service (jacdac-c services/analogsensor.c, pico src/adc.c) never
 * touches its pin's pad, which resets with its pull-down on (pico-sdk PADS_BANK0_GPIO26_RESET
 * 0x56: IE, PDE), and the ~50 kΩ pull-down loads the divider (a 10k/20k divider reads 0.588
 * instead of 0.667). A pin that a board service uses is left out of the runtime's GPIO pins
 * (impl_gpio.c valid_pin), so a board reading its pressure this way has no analog service on it.
 */
export function analogPinInput(pin: ds.AnalogInPin): PressureInput {
    const p = pin as unknown as ds.InputPin
    pinMode(p, ds.GPIOMode.AnalogIn)
    return async () => p.value as number
}

class PressureServer extends SensorServer implements ds.CitymeterWaterPressureServerSpec {
    private lastLogMs = -LOG_EVERY_MS
    constructor(
        private readonly input: PressureInput,
        private readonly nominal: PressureCalibration,
        private readonly c: PressureCalibration,
    ) {
        super(ds.CitymeterWaterPressure.spec)
    }
    async reading() {
        const ratio = await this.input()
        const v = adcToVolts(ratio, this.c)
        const now = ds.millis()
        if (now - this.lastLogMs >= LOG_EVERY_MS) {
            // what a two-point calibration needs: the nominal sensor millivolts at a known pressure
            this.lastLogMs = now
            console.log(`citymeter: pressure input ${Math.round(adcToVolts(ratio, this.nominal) * 1000)} mV`)
        }
        // out of range: report 0 Pa, which the PRESSURE_LOW rule turns into an alarm
        return outOfRange(v, this.c) ? 0 : voltsToPa(v, this.c)
    }
}

/** How often the raw input is logged (for calibration with a serial console). */
const LOG_EVERY_MS = 60000

/**
 * Serves pressure from `input` with the nominal conversion `c`, or the line through the unit's
 * calibration points when it has them (settings P_CAL).
 */
export function startPressure(input: PressureInput, c: PressureCalibration, points: PressurePoints) {
    const cal = points ? withPoints(c, points) : c
    startServer(new PressureServer(input, c, cal))
    if (points)
        console.log(
            `citymeter: pressure calibrated at ${points.pa0} Pa = ${points.mv0} mV and ${points.pa1} Pa = ${points.mv1} mV`,
        )
    else console.log("citymeter: pressure uncalibrated: nominal 5.000 V transducer supply (set P_CAL at provision)")
}
