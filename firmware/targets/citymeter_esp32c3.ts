// citymeter firmware for boards/citymeter_esp32c3.board.json: the meter program plus the board's hardware
// drivers. The program binds its sensors by role, so the drivers may start after it.
import { board, pins } from "@dsboard/citymeter_esp32c3"
import { startMeterDrivers } from "../drivers/start"
import "../main"

await startMeterDrivers({
    flowPin: pins.FLOW_PULSE,
    s0Pin: pins.S0_PULSE,
    tamper: board.startTamper("tamper"),
    pressureAdc: board.startPressureAdc("pressureAdc"),
})
