// Alarm rules in the VM: every rule raises and clears once, at the threshold edges.
import { describe, expect, test } from "@devicescript/test"
import { AlarmEdge, AlarmRules, alarmRulesOf, channelsOf } from "../alarms"
import { Tunables } from "../gen/tunables"
import { AlarmType, Channel } from "../gen/wire"
import { IntervalReading } from "../interval"

const T: Tunables = {
    intervalS: 60,
    batch: 4,
    leakS: 180,
    burstMlMin: 30000,
    backflowMl: 100,
    noFlowS: 300,
    pressureLowPa: 200000,
    pressureHighPa: 800000,
    undervoltageDv: 2070,
    supplyLossDv: 500,
    pulsesPerL: 1,
    impPerKwh: 1000,
    maxFlowLmin: 50,
    maxPowerW: 11000,
    pulseMs: 100,
}
const ALL = { intervalS: 60, hasWater: true, hasElectricity: true, hasPressure: true }

function reading(o: any): IntervalReading {
    const r: IntervalReading = {
        volumeMl: 0,
        reverseMl: 0,
        energyWh: 0,
        powerW: 0,
        voltageDv: 2300,
        pressureAvg: 300000,
        pressureMin: 300000,
        pressureMax: 300000,
        tamper: false,
        magnet: false,
    }
    for (const k of Object.keys(o)) (r as any)[k] = o[k]
    return r
}

function edges(rules: AlarmRules, o: any, type: number): AlarmEdge[] {
    return rules.evaluate(reading(o), ALL, T).filter((e) => e.type === type)
}

describe("leak", () => {
    test("raised exactly when continuous flow reaches leak_s, cleared by a dry interval", () => {
        const r = new AlarmRules()
        const L = AlarmType.ALARM_TYPE_LEAK
        expect(edges(r, { volumeMl: 5 }, L).length).toBe(0) // 60 s
        expect(edges(r, { volumeMl: 5 }, L).length).toBe(0) // 120 s
        const on = edges(r, { volumeMl: 5 }, L) // 180 s = leak_s
        expect(on.length).toBe(1)
        expect(on[0].active).toBe(true)
        expect(on[0].value).toBe(180)
        expect(edges(r, { volumeMl: 5 }, L).length).toBe(0) // still on: no repeat
        const off = edges(r, { volumeMl: 0 }, L)
        expect(off.length).toBe(1)
        expect(off[0].active).toBe(false)
    })
    test("a dry interval restarts the count", () => {
        const r = new AlarmRules()
        const L = AlarmType.ALARM_TYPE_LEAK
        edges(r, { volumeMl: 5 }, L)
        edges(r, { volumeMl: 5 }, L)
        edges(r, { volumeMl: 0 }, L)
        expect(edges(r, { volumeMl: 5 }, L).length).toBe(0)
        expect(edges(r, { volumeMl: 5 }, L).length).toBe(0)
        expect(edges(r, { volumeMl: 5 }, L).length).toBe(1)
    })
})

describe("burst", () => {
    test("inclusive at the threshold; flapping around it does not re-raise", () => {
        const r = new AlarmRules()
        const B = AlarmType.ALARM_TYPE_BURST
        // 30000 mL/min over 60 s = 30000 mL in the interval
        expect(edges(r, { volumeMl: 29999 }, B).length).toBe(0)
        expect(edges(r, { volumeMl: 30000 }, B)[0].active).toBe(true)
        expect(edges(r, { volumeMl: 29000 }, B).length).toBe(0) // inside the 5 % band
        expect(edges(r, { volumeMl: 30500 }, B).length).toBe(0)
        expect(edges(r, { volumeMl: 28600 }, B).length).toBe(0)
        const off = edges(r, { volumeMl: 28499 }, B) // below 95 %
        expect(off.length).toBe(1)
        expect(off[0].active).toBe(false)
    })
})

describe("backflow and no-flow", () => {
    test("backflow at backflow_ml, cleared when no reverse volume", () => {
        const r = new AlarmRules()
        const K = AlarmType.ALARM_TYPE_BACKFLOW
        expect(edges(r, { reverseMl: 99 }, K).length).toBe(0)
        expect(edges(r, { reverseMl: 100 }, K)[0].active).toBe(true)
        expect(edges(r, { reverseMl: 3 }, K).length).toBe(0)
        expect(edges(r, { reverseMl: 0 }, K)[0].active).toBe(false)
    })
    test("no flow for no_flow_s", () => {
        const r = new AlarmRules()
        const N = AlarmType.ALARM_TYPE_NO_FLOW
        for (let i = 0; i < 4; ++i) expect(edges(r, { volumeMl: 0 }, N).length).toBe(0)
        expect(edges(r, { volumeMl: 0 }, N)[0].active).toBe(true) // 300 s
        expect(edges(r, { volumeMl: 1 }, N)[0].active).toBe(false)
    })
})

describe("pressure", () => {
    test("low: strictly below raises, clears only 5 % above the threshold", () => {
        const r = new AlarmRules()
        const P = AlarmType.ALARM_TYPE_PRESSURE_LOW
        expect(edges(r, { pressureMin: 200000 }, P).length).toBe(0)
        expect(edges(r, { pressureMin: 199999 }, P)[0].active).toBe(true)
        expect(edges(r, { pressureMin: 205000 }, P).length).toBe(0)
        expect(edges(r, { pressureMin: 210000 }, P)[0].active).toBe(false)
    })
    test("high: strictly above raises, clears 5 % below", () => {
        const r = new AlarmRules()
        const P = AlarmType.ALARM_TYPE_PRESSURE_HIGH
        expect(edges(r, { pressureMax: 800000 }, P).length).toBe(0)
        expect(edges(r, { pressureMax: 800001 }, P)[0].active).toBe(true)
        expect(edges(r, { pressureMax: 790000 }, P).length).toBe(0)
        expect(edges(r, { pressureMax: 760000 }, P)[0].active).toBe(false)
    })
})

describe("electricity supply", () => {
    test("undervoltage between supply loss and the limit; supply loss below it", () => {
        const r = new AlarmRules()
        const U = AlarmType.ALARM_TYPE_UNDERVOLTAGE
        const S = AlarmType.ALARM_TYPE_SUPPLY_LOSS
        expect(edges(r, { voltageDv: 2070 }, U).length).toBe(0)
        expect(edges(r, { voltageDv: 2069 }, U)[0].active).toBe(true)
        const lost = reading({ voltageDv: 0 })
        const e = r.evaluate(lost, ALL, T)
        expect(e.filter((x) => x.type === S)[0].active).toBe(true)
        expect(e.filter((x) => x.type === U)[0].active).toBe(false)
        const back = r.evaluate(reading({ voltageDv: 2300 }), ALL, T)
        expect(back.filter((x) => x.type === S)[0].active).toBe(false)
        expect(back.filter((x) => x.type === U).length).toBe(0)
    })
})

describe("tamper", () => {
    test("case switch and magnet raise and clear independently", () => {
        const r = new AlarmRules()
        const e1 = r.evaluate(reading({ tamper: true }), ALL, T)
        expect(e1.length).toBe(1)
        expect(e1[0].type).toBe(AlarmType.ALARM_TYPE_TAMPER)
        const e2 = r.evaluate(reading({ tamper: true, magnet: true }), ALL, T)
        expect(e2.length).toBe(1)
        expect(e2[0].type).toBe(AlarmType.ALARM_TYPE_MAGNETIC_FIELD)
        const e3 = r.evaluate(reading({}), ALL, T)
        expect(e3.length).toBe(2)
        expect(e3[0].active).toBe(false)
        expect(e3[1].active).toBe(false)
    })
    test("absent channels raise nothing", () => {
        const r = new AlarmRules()
        const none = { intervalS: 60, hasWater: false, hasElectricity: false, hasPressure: false }
        expect(r.evaluate(reading({ voltageDv: 0, pressureMin: 0, volumeMl: 99999 }), none, T).length).toBe(0)
    })
})

describe("honest alarms: only what a sensor measures", () => {
    // a citymeter board: reed pulses (no direction), S0 (energy only: no voltage, no measured power), no magnet sensor
    const BOARD = {
        intervalS: 60,
        hasWater: true,
        hasElectricity: true,
        hasPressure: true,
        hasReverse: false,
        hasVoltage: false,
        hasPower: false,
        hasTamper: true,
        hasMagnet: false,
    }
    test("a board lists only the channels and rules it has sensors for", () => {
        expect(channelsOf(BOARD).join(",")).toBe(
            [Channel.CHANNEL_WATER, Channel.CHANNEL_ENERGY, Channel.CHANNEL_PRESSURE, Channel.CHANNEL_TAMPER].join(","),
        )
        // the same board with an ADE7953 fitted measures voltage and power, and evaluates the voltage rules
        const withIc = {
            intervalS: 60,
            hasWater: true,
            hasElectricity: true,
            hasPressure: true,
            hasReverse: false,
            hasTamper: true,
            hasMagnet: false,
        }
        expect(channelsOf(withIc).join(",")).toBe(
            [
                Channel.CHANNEL_WATER,
                Channel.CHANNEL_ENERGY,
                Channel.CHANNEL_POWER,
                Channel.CHANNEL_VOLTAGE,
                Channel.CHANNEL_PRESSURE,
                Channel.CHANNEL_TAMPER,
            ].join(","),
        )
        const icRules = alarmRulesOf(withIc)
        for (const t of [AlarmType.ALARM_TYPE_UNDERVOLTAGE, AlarmType.ALARM_TYPE_SUPPLY_LOSS])
            expect(icRules.indexOf(t) >= 0).toBe(true)
        expect(icRules.indexOf(AlarmType.ALARM_TYPE_BACKFLOW)).toBe(-1)
        const rules = alarmRulesOf(BOARD)
        for (const t of [
            AlarmType.ALARM_TYPE_BACKFLOW,
            AlarmType.ALARM_TYPE_UNDERVOLTAGE,
            AlarmType.ALARM_TYPE_SUPPLY_LOSS,
            AlarmType.ALARM_TYPE_MAGNETIC_FIELD,
        ])
            expect(rules.indexOf(t)).toBe(-1)
        for (const t of [
            AlarmType.ALARM_TYPE_LEAK,
            AlarmType.ALARM_TYPE_BURST,
            AlarmType.ALARM_TYPE_PRESSURE_LOW,
            AlarmType.ALARM_TYPE_TAMPER,
        ])
            expect(rules.indexOf(t) >= 0).toBe(true)
        // the simulator's sensors measure everything
        expect(alarmRulesOf(ALL).length).toBe(10)
        expect(channelsOf(ALL).length).toBe(8)
    })
    test("a board without voltage or direction raises no voltage or backflow alarm, whatever the readings say", () => {
        const r = new AlarmRules()
        const e = r.evaluate(reading({ voltageDv: 0, reverseMl: 999999, magnet: true }), BOARD, T)
        for (const x of e)
            expect(
                x.type === AlarmType.ALARM_TYPE_SUPPLY_LOSS ||
                    x.type === AlarmType.ALARM_TYPE_UNDERVOLTAGE ||
                    x.type === AlarmType.ALARM_TYPE_BACKFLOW ||
                    x.type === AlarmType.ALARM_TYPE_MAGNETIC_FIELD,
            ).toBe(false)
        // the same readings on a meter that measures them do raise
        expect(
            new AlarmRules().evaluate(reading({ voltageDv: 0, reverseMl: 999999, magnet: true }), ALL, T).length,
        ).toBe(3)
    })
})
