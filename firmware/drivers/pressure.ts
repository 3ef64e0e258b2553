// Ratiometric 0.5–4.5 V pressure transducer on an ADC → pascals, with zero/span calibration and
// out-of-range detection (an open or shorted sensor reads outside 0.5–4.5 V). Exposes the
// citymeter Water Pressure service (services/waterpressure.md).
import * as ds from "@devicescript/core"
import { SensorServer, startServer } from "@devicescript/server"

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

class PressureServer extends SensorServer implements ds.CitymeterWaterPressureServerSpec {
    constructor(
        private readonly adc: ds.Potentiometer,
        private readonly c: PressureCalibration,
    ) {
        super(ds.CitymeterWaterPressure.spec)
    }
    async reading() {
        const v = adcToVolts(await this.adc.reading.read(), this.c)
        // out of range: report 0 Pa, which the PRESSURE_LOW rule turns into an alarm
        return outOfRange(v, this.c) ? 0 : voltsToPa(v, this.c)
    }
}

/** Serves pressure from an analog input role (a board's `analog:potentiometer` ADC service). */
export function startPressure(adc: ds.Potentiometer, c: PressureCalibration) {
    startServer(new PressureServer(adc, c))
}
