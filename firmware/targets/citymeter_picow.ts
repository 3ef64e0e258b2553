// citymeter firmware for boards/citymeter_picow.board.json: the meter program plus the board's hardware
// drivers. The program binds its sensors by role, so the drivers may start after it. In the
// simulator the same bytecode finds no pins and the simulated sensors serve the roles.
import { board, pins } from "@dsboard/citymeter_picow"
import { SHELLY_FRONT_END } from "../drivers/ade7953"
import { analogPinInput } from "../drivers/pressure"
import { startMeterDrivers } from "../drivers/start"
import "../main"

await startMeterDrivers({
    flowPin: pins.FLOW_PULSE,
    s0Pin: pins.S0_PULSE,
    startTamper: () => board.startTamper("tamper"),
    // GP26 read in the GPIO AnalogIn mode, not through an analog service: that mode turns the pad's
    // reset pull-down off (drivers/pressure.ts analogPinInput; issue 20)
    startPressureInput: () => analogPinInput(pins.PRESS_ADC),
    // boards/citymeter_picow.board.json $adcFullScaleV and $pressureDivider (citymeter build checks they agree)
    adcFullScaleV: 3.3,
    pressureDivider: 0.6667,
    // an ADE7953 module on the board's I2C (board file "i2c"), if fitted: the board has no front end of its
    // own (board file $ade7953FrontEnd), so these are the Shelly module's counts per V, A, W; a unit's
    // gain and offset come from its settings (ADE_CAL)
    meteringIc: SHELLY_FRONT_END,
})
