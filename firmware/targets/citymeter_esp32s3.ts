// citymeter firmware for boards/citymeter_esp32s3.board.json: the meter program plus the board's hardware
// drivers. The program binds its sensors by role, so the drivers may start after it. In the
// simulator the same bytecode finds no pins and the simulated sensors serve the roles.
import { board, pins } from "@dsboard/citymeter_esp32s3"
import { SHELLY_FRONT_END } from "../drivers/ade7953-calibration"
import { serviceInput } from "../drivers/pressure"
import { startMeterDrivers } from "../drivers/start"
import "../main"

await startMeterDrivers({
    // defined on the board, undefined in the simulator (drivers/start.ts hasPins); no service uses it
    boardPin: pins.P0,
    // the tamper switch first: the program's buttons are started in this order, and the main
    // program's "tamper" role binds the first free button of the board (the pulse roles come later)
    startTamper: () => board.startTamper("tamper"),
    // the pulse inputs: button services sampling FLOW_PULSE and S0_PULSE in C (firmware/pulses.ts)
    startFlowPulse: () => board.startFlowPulse("flowPulse"),
    startS0Pulse: () => board.startS0Pulse("s0Pulse"),
    startPressureInput: () => serviceInput(board.startPressureAdc("pressureAdc")),
    // boards/citymeter_esp32s3.board.json $adcFullScaleV and $pressureDivider (citymeter build checks they agree)
    adcFullScaleV: 3.1,
    pressureDivider: 0.5,
    // an ADE7953 module on the board's I2C (board file "i2c"), if fitted: the board has no front end of its
    // own (board file $ade7953FrontEnd), so these are the Shelly module's counts per V, A, W; a unit's
    // gain and offset come from its settings (ADE_CAL)
    meteringIc: SHELLY_FRONT_END,
})
