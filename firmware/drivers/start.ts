// Starts the hardware drivers of a citymeter board with the pulse constants from settings.
//
// One bytecode runs on the board and in the simulator (issue 11): the pin names of a board
// definition (`pins.FLOW_PULSE`, ...) are looked up at run time in the board configuration that
// was flashed with the runtime. The simulator's VM has no pins at all, so there every pin reads
// `undefined`: the drivers then start nothing and the simulated Jacdac sensors serve the roles the
// meter program binds (water flow, electricity, pressure, tamper).
import * as ds from "@devicescript/core"
import { pinMode } from "@devicescript/gpio"
import { loadConfig, pulseConstantListeners } from "../config"
import { startS0Meter } from "./electricity"
import { DEFAULT_CALIBRATION, PressureCalibration, startPressure } from "./pressure"
import { startWaterFlow } from "./waterflow"
import { measures } from "../hardware"

export interface MeterPins {
    flowPin: ds.InputPin
    s0Pin: ds.InputPin
    /** Starts the board's tamper switch service (board definition); the program binds it by role. */
    startTamper: () => ds.Button
    /** Starts the board's ADC service for the pressure transducer. */
    startPressureAdc: () => ds.Potentiometer
    /** ADC full scale of this chip, volts (boards/<id>.board.json "$adcFullScaleV"). */
    adcFullScaleV: number
    /** Divider between the 0.5–4.5 V transducer and the ADC pin ("$pressureDivider"). */
    pressureDivider: number
}

/** True when the runtime has the board's pins: a board, not the simulator's VM. */
export function hasPins(p: MeterPins): boolean {
    return p.flowPin !== undefined && p.flowPin !== null
}

/** Starts the drivers on a board; in the simulator (no pins) starts nothing. Returns true on a board. */
export async function startMeterDrivers(p: MeterPins): Promise<boolean> {
    if (!hasPins(p)) {
        console.log("citymeter: no pins: the simulated sensors serve the roles")
        return false
    }
    // the constants the program runs with: loadConfig refuses ones the 100 ms polling cannot count
    const cfg = await loadConfig()
    pinMode(p.flowPin, ds.GPIOMode.InputPullUp)
    pinMode(p.s0Pin, ds.GPIOMode.InputPullUp)
    const flow = startWaterFlow({ pin: p.flowPin, pulsesPerL: cfg.t.pulsesPerL })
    const s0 = startS0Meter(p.s0Pin, cfg.t.impPerKwh, 2300)
    // a reed contact has no direction and S0 no voltage: the Birth and the alarm rules say so
    measures.reverseFlow = false
    measures.voltage = false
    // a config downlink's pulse constants reach the counters without a reboot (issue 11)
    pulseConstantListeners.push(t => {
        flow.setPulsesPerL(t.pulsesPerL)
        s0.setImpPerKwh(t.impPerKwh)
    })
    p.startTamper()
    const c: PressureCalibration = {
        zeroV: DEFAULT_CALIBRATION.zeroV,
        spanV: DEFAULT_CALIBRATION.spanV,
        rangePa: DEFAULT_CALIBRATION.rangePa,
        fullScaleV: p.adcFullScaleV,
        divider: p.pressureDivider,
    }
    startPressure(p.startPressureAdc(), c)
    console.log("citymeter: board drivers started")
    return true
}
