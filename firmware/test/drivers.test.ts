// Driver conversion maths in the VM (the drivers themselves need hardware: boards/).
import { describe, expect, test } from "@devicescript/test"
import { modbusCrc16, parsePzemResponse, pzemReadRequest, s0PowerW, s0ToWh, S0Counter } from "../drivers/electricity"
import { adcToVolts, DEFAULT_CALIBRATION, outOfRange, pointsError, voltsToPa, withPoints } from "../drivers/pressure"
import { FlowCounter, flowRateMlMin, pulsesToMl } from "../drivers/waterflow"

describe("water flow pulses", () => {
    test("pulses to millilitres at the sensor's K-factor", () => {
        expect(pulsesToMl(450, 450)).toBe(1000)
        expect(pulsesToMl(1, 450)).toBe(2) // 2.22 mL, rounded down
        expect(pulsesToMl(0, 450)).toBe(0)
        expect(pulsesToMl(1, 1)).toBe(1000) // reed switch, 1 pulse per litre
    })
    test("flow rate from pulses over time", () => {
        expect(flowRateMlMin(450, 60000, 450)).toBe(1000) // 1 L in a minute
        expect(flowRateMlMin(225, 1000, 450)).toBe(30000) // 225 Hz = 30 L/min
        expect(flowRateMlMin(10, 0, 450)).toBe(0)
    })
    test("the cumulative volume wraps at 2^32 mL like the service register", () => {
        const c = new FlowCounter(1)
        c.pulses = 4294967 // 4 294 967 L = 4 294 967 000 mL
        expect(c.volumeMl()).toBe(4294967000)
        c.pulses = 4294968
        expect(c.volumeMl()).toBe(4294968000 - 4294967296)
    })
    test("rate follows the pulses between updates", () => {
        const c = new FlowCounter(450)
        c.updateRate(1000)
        for (let i = 0; i < 45; ++i) c.pulse()
        c.updateRate(2000)
        expect(c.rateMlMin).toBe(6000) // 45 pulses/s = 0.1 L/s
    })
})

describe("S0 electricity pulses", () => {
    test("impulses to watt-hours", () => {
        expect(s0ToWh(1000, 1000)).toBe(1000)
        expect(s0ToWh(1, 1000)).toBe(1)
        expect(s0ToWh(1, 800)).toBe(1) // 1.25 Wh, rounded down
        expect(s0ToWh(5, 800)).toBe(6)
    })
    test("power from the gap between impulses", () => {
        expect(s0PowerW(3600, 1000)).toBe(1000) // 1 Wh every 3.6 s = 1 kW
        expect(s0PowerW(1000, 1000)).toBe(3600)
        expect(s0PowerW(0, 1000)).toBe(0)
    })
    test("power decays when impulses stop", () => {
        const s = new S0Counter(1000)
        s.impulse(0)
        s.impulse(3600)
        expect(s.powerW).toBe(1000)
        s.settle(7200) // no impulse for 3.6 s more: still at most 1 kW
        expect(s.powerW).toBe(1000)
        s.settle(3600 + 36000)
        expect(s.powerW).toBe(100)
    })
})

describe("PZEM-004T Modbus RTU", () => {
    test("the read request matches the documented frame 01 04 00 00 00 0A 70 0D", () => {
        expect(pzemReadRequest(1).toString("hex")).toBe("01040000000a700d")
    })
    test("a response is parsed into units, a corrupted one rejected", () => {
        const b = Buffer.alloc(25)
        const words = [2301, 1500, 0, 3450, 0, 0xa120, 0x0007, 500, 95, 0] // 230.1 V, 1.5 A, 345 W, 500000 Wh
        b.setAt(0, "u8", 1)
        b.setAt(1, "u8", 4)
        b.setAt(2, "u8", 20)
        for (let i = 0; i < 10; ++i) {
            b.setAt(3 + i * 2, "u8", words[i] >> 8)
            b.setAt(4 + i * 2, "u8", words[i] & 0xff)
        }
        const crc = modbusCrc16(b, 23)
        b.setAt(23, "u8", crc & 0xff)
        b.setAt(24, "u8", crc >> 8)
        const r = parsePzemResponse(b)
        expect(r.voltageDv).toBe(2301)
        expect(r.currentMa).toBe(1500)
        expect(r.powerW).toBe(345)
        expect(r.energyWh).toBe(500000)
        expect(r.frequencyDhz).toBe(500)
        expect(r.powerFactorPct).toBe(95)
        b.setAt(5, "u8", 0x55)
        expect(parsePzemResponse(b)).toBe(undefined)
    })
})

describe("pressure transducer", () => {
    const c = DEFAULT_CALIBRATION
    test("0.5 V is zero, 4.5 V full range, 2.5 V half", () => {
        expect(voltsToPa(0.5, c)).toBe(0)
        expect(voltsToPa(4.5, c)).toBe(1000000)
        expect(voltsToPa(2.5, c)).toBe(500000)
        expect(voltsToPa(0.45, c)).toBe(0) // below zero clamps
    })
    test("zero and span calibration", () => {
        const cal = { zeroV: 0.52, spanV: 3.96, rangePa: 1600000, fullScaleV: 3.3, divider: 0.66 }
        expect(voltsToPa(0.52, cal)).toBe(0)
        expect(voltsToPa(4.48, cal)).toBe(1600000)
    })
    test("ADC ratio through the divider", () => {
        expect(Math.round(adcToVolts(1, c) * 1000)).toBe(5000)
        expect(Math.round(adcToVolts(0.1, c) * 1000)).toBe(500)
    })
    test("out of range beyond 0.1 V outside the band (open or shorted sensor)", () => {
        expect(outOfRange(0.4, c)).toBe(false)
        expect(outOfRange(0.39, c)).toBe(true)
        expect(outOfRange(4.6, c)).toBe(false)
        expect(outOfRange(4.61, c)).toBe(true)
        expect(outOfRange(0, c)).toBe(true)
    })
})

// A simulated ADC per chip. The transducer's output goes through the board's divider to an ideal
// 12-bit ADC with the chip's full scale (boards/<id>.board.json $adcFullScaleV, $pressureDivider).
// This checks the conversion maths only: it loses at most half a step of an ideal ADC. What a real
// board reads to comes from the chips' data sheets (the boards' $adcNote; README "A real meter"):
// an ideal ADC's step is far below them.
/** The ADC reading as the analog service gives it: a 0..1 ratio of full scale, quantised to `bits`. */
function simulatedAdc(pinV: number, fullScaleV: number, bits: number): number {
    const top = (1 << bits) - 1
    let code = Math.round((pinV / fullScaleV) * top)
    if (code > top) code = top
    if (code < 0) code = 0
    return code / top
}

/** A ratiometric transducer's output: 10 % of its supply at zero, 90 % at full range. */
function transducerV(supplyV: number, pa: number, rangePa: number): number {
    return supplyV * (0.1 + (0.8 * pa) / rangePa)
}

const chips = [
    { board: "citymeter_esp32c3", fullScaleV: 2.5, divider: 0.5 },
    { board: "citymeter_esp32s3", fullScaleV: 3.1, divider: 0.5 },
    { board: "citymeter_picow", fullScaleV: 3.3, divider: 0.6667 },
]

describe("pressure through each chip's simulated ADC", () => {
    chips.forEach((chip) => {
        test(`${chip.board}: the conversion loses at most half an ideal ADC step over 0..10 bar`, () => {
            const c = {
                zeroV: 0.5,
                spanV: 4.0,
                rangePa: 1000000,
                fullScaleV: chip.fullScaleV,
                divider: chip.divider,
            }
            // one 12-bit step in pascals: full scale / 4095 at the pin, / divider at the sensor
            const stepPa = (chip.fullScaleV / 4095 / chip.divider / c.spanV) * c.rangePa
            let worst = 0
            // 127 pressures 7,919 Pa apart (a prime: they fall anywhere within an ADC step), and full range
            for (let pa = 0; pa <= c.rangePa; pa = pa + 7919 > c.rangePa && pa < c.rangePa ? c.rangePa : pa + 7919) {
                const sensorV = c.zeroV + (pa / c.rangePa) * c.spanV
                const got = voltsToPa(adcToVolts(simulatedAdc(sensorV * chip.divider, chip.fullScaleV, 12), c), c)
                const err = Math.abs(got - pa)
                if (err > worst) worst = err
            }
            // the band's ends read inside it: no clipping at 4.5 V, no false open/short alarm
            expect(outOfRange(adcToVolts(simulatedAdc(4.5 * chip.divider, chip.fullScaleV, 12), c), c)).toBe(false)
            expect(outOfRange(adcToVolts(simulatedAdc(0.5 * chip.divider, chip.fullScaleV, 12), c), c)).toBe(false)
            expect(worst <= stepPa / 2 + 1).toBe(true)
        })
    })
    test("assuming 3.3 V on an ESP32-C3 reads 32 % high", () => {
        const c = { zeroV: 0.5, spanV: 4.0, rangePa: 1000000, fullScaleV: 3.3, divider: 0.5 }
        // 5 bar true: 2.5 V at the sensor, 1.25 V at the pin, read by a 2.5 V full-scale ADC
        const ratio = simulatedAdc(1.25, 2.5, 12)
        expect(adcToVolts(ratio, c) > 3.29).toBe(true)
    })
})

// Issue 20: the transducer is ratiometric, the ADC is not. On a 5.25 V supply the nominal conversion
// reads 5 bar as 531 kPa; a two-point calibration taken on that supply reads it right.
describe("ratiometric transducer, two-point calibration", () => {
    const rangePa = 1000000
    chips.forEach((chip) => {
        const nominal = { zeroV: 0.5, spanV: 4.0, rangePa, fullScaleV: chip.fullScaleV, divider: chip.divider }
        /** What the meter reads (its "pressure input" mV, nominal conversion) at `pa` on `supplyV`. */
        const loggedMv = (supplyV: number, pa: number) =>
            Math.round(
                adcToVolts(
                    simulatedAdc(transducerV(supplyV, pa, rangePa) * chip.divider, chip.fullScaleV, 12),
                    nominal,
                ) * 1000,
            )
        const read = (supplyV: number, pa: number, c: typeof nominal) =>
            voltsToPa(
                adcToVolts(simulatedAdc(transducerV(supplyV, pa, rangePa) * chip.divider, chip.fullScaleV, 12), c),
                c,
            )
        test(`${chip.board}: 5 bar on a 5.25 V supply reads 531 kPa uncalibrated`, () => {
            const got = read(5.25, 500000, nominal)
            expect(got > 528000 && got < 534000).toBe(true)
        })
        test(`${chip.board}: calibrated at 0 and 8 bar on its supply, 5 bar reads 500 kPa within an ADC step and the logged mV's rounding`, () => {
            // the stated error: one 12-bit step of an ideal ADC, plus half a logged millivolt at each
            // point carried to 5 bar (the points are 8 bar apart: 0.5 mV is 125 Pa of a 4.2 V span)
            const stepPa = (chip.fullScaleV / 4095 / chip.divider / 4.0) * rangePa
            for (const supplyV of [4.75, 5.0, 5.25]) {
                const points = { mv0: loggedMv(supplyV, 0), pa0: 0, mv1: loggedMv(supplyV, 800000), pa1: 800000 }
                expect(pointsError(points)).toBe(undefined)
                const c = withPoints(nominal, points)
                const mvPa = (0.5 / 1000 / (supplyV * 0.8)) * rangePa
                for (const pa of [150000, 300000, 500000, 700000]) {
                    const err = Math.abs(read(supplyV, pa, c) - pa)
                    if (err > stepPa + 2 * mvPa)
                        console.log(`${chip.board} ${supplyV} V ${pa} Pa: error ${err} Pa over ${stepPa + 2 * mvPa}`)
                    expect(err <= stepPa + 2 * mvPa).toBe(true)
                }
                // the sensor's band follows the calibration: 90 % of the supply is not out of range
                expect(
                    outOfRange(
                        adcToVolts(
                            simulatedAdc(transducerV(supplyV, rangePa, rangePa) * chip.divider, chip.fullScaleV, 12),
                            c,
                        ),
                        c,
                    ),
                ).toBe(false)
            }
        })
    })
    test("points that cannot calibrate are refused with the reason", () => {
        expect(pointsError({ mv0: 525, pa0: 0, mv1: 3885, pa1: 800000 })).toBe(undefined)
        expect(pointsError({ mv0: 525, pa0: 0, mv1: 600, pa1: 50000 }) !== undefined).toBe(true) // too close
        expect(pointsError({ mv0: 3885, pa0: 0, mv1: 525, pa1: 800000 }) !== undefined).toBe(true) // falling
        expect(pointsError({ mv0: 525.5, pa0: 0, mv1: 3885, pa1: 800000 }) !== undefined).toBe(true) // fraction
        expect(pointsError({ mv0: 525, pa0: 0, mv1: 9000, pa1: 800000 }) !== undefined).toBe(true) // over 6 V
    })
})
