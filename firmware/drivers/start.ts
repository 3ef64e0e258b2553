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
import { loadConfig, pulseConstantListeners } from "../config"
import { loadProbeRetryMs, SETTLE_MS, startMeteringIc } from "./ade7953"
import { Ade7953Calibration, loadAde7953Trim } from "./ade7953-calibration"
import { ADE7953_I2C_ADDRESS, I2cRegisterBus } from "./ade7953-registers"
import { S0Counter, s0Source, startElectricityMeter, startS0Counter, SwitchableEnergy } from "./electricity"
import { DEFAULT_CALIBRATION, loadPressurePoints, PressureCalibration, PressureInput, startPressure } from "./pressure"
import { FlowCounter, startWaterFlow } from "./waterflow"
import { measures } from "../hardware"

export interface MeterPins {
    /**
     * A pin of the board that no service uses: defined on a board, undefined in the simulator's VM.
     * Not a sensor pin: the runtime leaves a pin a board service uses out of `pins` ("GPIO: skip
     * FLOW_PULSE -> 14 (used)"), so once the pulse inputs became button services (issue 20) their
     * pins read undefined on the board too, and the board took itself for the simulator.
     */
    boardPin: ds.Pin
    /**
     * The board's pulse inputs: button services on FLOW_PULSE and S0_PULSE (board definition
     * "$services" flowPulse, s0Pulse), sampled in C; in the simulator the host's button servers.
     */
    startFlowPulse: () => ds.Button
    startS0Pulse: () => ds.Button
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
    return p.boardPin !== undefined && p.boardPin !== null
}

/** services/pulseinputs.md: the host simulates the water meter's pulse output (bit 0), the S0 output (bit 1). */
const SIM_WATER = 1
const SIM_S0 = 2

/**
 * In the simulator (no pins) the host says which pulse outputs it simulates (Citymeter Pulse
 * Inputs, services/pulseinputs.md); their edges come as button events on the same roles as a
 * board's, and the same drivers count them. Until that service appears nothing starts, so a host
 * that serves the Water Flow and Electricity services itself is bound as before.
 */
function startSimulatedPulses(p: MeterPins, pulsesPerL: number, impPerKwh: number) {
    const sim = new ds.CitymeterPulseInputs()
    let started = false
    sim.binding().subscribe(async (bound: boolean) => {
        if (!bound || started) return
        started = true
        const which = await sim.reading.read()
        let flow: FlowCounter = undefined
        let s0: S0Counter = undefined
        if (which & SIM_WATER) {
            flow = startWaterFlow(p.startFlowPulse(), pulsesPerL)
            measures.reverseFlow = false
        }
        if (which & SIM_S0) {
            s0 = startS0Counter(p.startS0Pulse(), impPerKwh)
            startElectricityMeter(new SwitchableEnergy(s0Source(s0, 2300)))
            measures.voltage = false
            measures.power = false
        }
        pulseConstantListeners.push((t) => {
            if (flow) flow.setPulsesPerL(t.pulsesPerL)
            if (s0) s0.setImpPerKwh(t.impPerKwh)
        })
        console.log(
            `citymeter: simulated pulse outputs:${flow ? ` water ${pulsesPerL} pulses/L` : ""}${s0 ? ` S0 ${impPerKwh} imp/kWh` : ""}, counted from button events`,
        )
    })
}

/** Starts the drivers on a board; in the simulator (no pins) starts nothing. Returns true on a board. */
export async function startMeterDrivers(p: MeterPins): Promise<boolean> {
    // the constants the program runs with: loadConfig refuses ones past the board's pulse limits
    const cfg = await loadConfig()
    if (!hasPins(p)) {
        console.log("citymeter: no pins: the simulated sensors serve the roles")
        startSimulatedPulses(p, cfg.t.pulsesPerL, cfg.t.impPerKwh)
        return false
    }
    // the pins' button services (their pull-ups and sampling) are started by the runtime
    const flow = startWaterFlow(p.startFlowPulse(), cfg.t.pulsesPerL)
    // a reed contact has no direction: the Birth and the alarm rules say so
    measures.reverseFlow = false
    // S0 counts from the start (its button service, sampled in C); the ADE7953, probed after its power-up settle time and then every
    // ADE_RETRY_S (30 s by default) until it answers, takes over with the energy register continuing (issue 20)
    const s0 = startS0Counter(p.startS0Pulse(), cfg.t.impPerKwh)
    const energy = new SwitchableEnergy(s0Source(s0, 2300))
    startElectricityMeter(energy)
    await ds.sleep(SETTLE_MS)
    const retryMs = await loadProbeRetryMs()
    const { ic } = await startMeteringIc(
        new I2cRegisterBus(ADE7953_I2C_ADDRESS),
        p.meteringIc,
        await loadAde7953Trim(),
        energy,
        retryMs,
    )
    if (!ic)
        console.log(`citymeter: no ADE7953 on I2C: S0 pulses count energy (probed again every ${retryMs / 1000} s)`)
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
