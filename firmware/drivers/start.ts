// Starts the hardware drivers of a citymeter board with the pulse constants from settings.
import * as ds from "@devicescript/core"
import { pinMode } from "@devicescript/gpio"
import { readSetting } from "@devicescript/settings"
import { clampInt } from "../config"
import { startS0Meter } from "./electricity"
import { DEFAULT_CALIBRATION, startPressure } from "./pressure"
import { startWaterFlow } from "./waterflow"

export interface MeterPins {
    flowPin: ds.InputPin
    s0Pin: ds.InputPin
    /** Started by the board definition; the meter program binds to it by role. */
    tamper: ds.Button
    pressureAdc: ds.Potentiometer
}

export async function startMeterDrivers(p: MeterPins) {
    const pulsesPerL = clampInt(await readSetting<number>("PULSES_PER_L", 450), 1, 100000, 450)
    const impPerKwh = clampInt(await readSetting<number>("IMP_PER_KWH", 1000), 1, 100000, 1000)
    pinMode(p.flowPin, ds.GPIOMode.InputPullUp)
    pinMode(p.s0Pin, ds.GPIOMode.InputPullUp)
    startWaterFlow({ pin: p.flowPin, pulsesPerL })
    startS0Meter(p.s0Pin, impPerKwh, 2300)
    startPressure(p.pressureAdc, DEFAULT_CALIBRATION)
}
