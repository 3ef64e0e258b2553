// Starts the hardware drivers of a citymeter board with the pulse constants from settings.
//
// One bytecode runs on the board and in the simulator: the pin names of a board
// definition (`pins.FLOW_PULSE`, ...) are looked up at run time in the board configuration that
// was flashed with the runtime. The simulator's VM has no pins at all, so there every pin reads
// `undefined`: the drivers then start nothing and the simulated Jacdac sensors serve the roles the
// meter program binds (water flow, electricity, pressure, tamper).
//
// Electricity: an ADE7953 metering IC on the board's I2C bus (boards/<id>.board.json "i2c") measures
// voltage, power and energy; without one answering there, the S0 pulse input counts energy only.
import * as ds from "@devicescript/core"
import { pinMode } from "@devicescript/gpio"
import { loadConfig, pulseConstantListeners } from "../config"
import {
    ADE7953_I2C_ADDRESS,
    Ade7953Calibration,
    I2cRegisterBus,
    loadAde7953Trim,
    PROBE_RETRY_MS,
    SETTLE_MS,
    startMeteringIc,
} from "./ade7953"
import { s0Source, startElectricityMeter, startS0Counter, SwitchableEnergy } from "./electricity"
import { DEFAULT_CALIBRATION, loadPressurePoints, PressureCalibration, PressureInput, startPressure } from "./pressure"
import { startSimulatedWaterFlow, startWaterFlow } from "./waterflow"
import { measures } from "../hardware"

export interface MeterPins {
    flowPin: ds.InputPin
    s0Pin: ds.InputPin
    /** Starts the board's tamper switch service (board definition); the program binds it by role. */
    startTamper: () => ds.Button
    /**
     * Starts the board's pressure ADC input: its analog service (ESP32 boards) or its pin in the
     * GPIO AnalogIn mode (Pico W: the mode that switches the RP2040 pad's pull-down off, pressure.ts).
     */
    startPressureInput: () => PressureInput
    /** ADC full scale of this chip, volts (boards/<id>.board.json "$adcFullScaleV"). */
    adcFullScaleV: number
    /** Divider between the 0.5–4.5 V transducer and the ADC pin ("$pressureDivider"). */
    pressureDivider: number
    /** Register counts per unit of the board's metering front end, if an ADE7953 is fitted. */
    meteringIc: Ade7953Calibration
}

/** True when the runtime has the board's pins: a board, not the simulator's VM. */
export function hasPins(p: MeterPins): boolean {
    return p.flowPin !== undefined && p.flowPin !== null
}

/** Starts the drivers on a board; in the simulator (no pins) starts nothing. Returns true on a board. */
export async function startMeterDrivers(p: MeterPins): Promise<boolean> {
    // the constants the program runs with: loadConfig refuses ones the 100 ms polling cannot count
    const cfg = await loadConfig()
    if (!hasPins(p)) {
        console.log("citymeter: no pins: the simulated sensors serve the roles")
        // a simulated pulse output is counted by the board's own water flow driver (waterflow.ts)
        startSimulatedWaterFlow(cfg.t.pulsesPerL, (flow) => {
            measures.reverseFlow = false
            pulseConstantListeners.push((t) => flow.setPulsesPerL(t.pulsesPerL))
            console.log(`citymeter: simulated pulse output: counting ${cfg.t.pulsesPerL} pulses/L every 100 ms`)
        })
        return false
    }
    pinMode(p.flowPin, ds.GPIOMode.InputPullUp)
    pinMode(p.s0Pin, ds.GPIOMode.InputPullUp)
    const flow = startWaterFlow({ pin: p.flowPin, pulsesPerL: cfg.t.pulsesPerL })
    // a reed contact has no direction: the Birth and the alarm rules say so
    measures.reverseFlow = false
    // S0 counts from the start; the ADE7953, probed after its power-up settle time and then every
    // PROBE_RETRY_MS until it answers, takes over with the energy register continuing (issue 20)
    const s0 = startS0Counter(p.s0Pin, cfg.t.impPerKwh)
    const energy = new SwitchableEnergy(s0Source(s0, 2300))
    startElectricityMeter(energy)
    await ds.sleep(SETTLE_MS)
    const { ic } = await startMeteringIc(
        new I2cRegisterBus(ADE7953_I2C_ADDRESS),
        p.meteringIc,
        await loadAde7953Trim(),
        energy,
        PROBE_RETRY_MS,
    )
    if (!ic) console.log("citymeter: no ADE7953 on I2C: S0 pulses count energy (probed again every 30 s)")
    // a config downlink's pulse constants reach the counters without a reboot
    pulseConstantListeners.push((t) => {
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
    startPressure(p.startPressureInput(), c, await loadPressurePoints())
    console.log("citymeter: board drivers started")
    return true
}
