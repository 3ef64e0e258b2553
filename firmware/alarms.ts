// Edge alarm rules, evaluated once per closed interval. Names follow OMS/wM-Bus flags and FIWARE
// WaterConsumptionObserved (proto AlarmType). Every rule raises once and clears once: thresholds
// are inclusive on the raising side, and rules that measure an analogue value clear only past a
// 5 % hysteresis band, so a value hovering at the threshold does not flap.
import { AlarmType, Channel } from "./gen/wire"
import { IntervalFlags, IntervalReading } from "./interval"
import { Tunables } from "./gen/tunables"

export interface AlarmEdge {
    type: number
    active: boolean
    /** The measured value behind the edge, in the rule's unit. */
    value: number
}

const can = (v: boolean | undefined) => v !== false

/** The measured channels (proto Channel), for the Birth. */
export function channelsOf(f: IntervalFlags): number[] {
    const out: number[] = []
    if (f.hasWater) out.push(Channel.CHANNEL_WATER)
    if (f.hasWater && can(f.hasReverse)) out.push(Channel.CHANNEL_REVERSE_FLOW)
    if (f.hasElectricity) out.push(Channel.CHANNEL_ENERGY)
    if (f.hasElectricity && can(f.hasPower)) out.push(Channel.CHANNEL_POWER)
    if (f.hasElectricity && can(f.hasVoltage)) out.push(Channel.CHANNEL_VOLTAGE)
    if (f.hasPressure) out.push(Channel.CHANNEL_PRESSURE)
    if (can(f.hasTamper)) out.push(Channel.CHANNEL_TAMPER)
    if (can(f.hasMagnet)) out.push(Channel.CHANNEL_MAGNET)
    return out
}

/** The alarm rules a meter with these channels evaluates (proto AlarmType), for the Birth. */
export function alarmRulesOf(f: IntervalFlags): number[] {
    const out: number[] = []
    if (f.hasWater) {
        out.push(AlarmType.ALARM_TYPE_LEAK)
        out.push(AlarmType.ALARM_TYPE_BURST)
        if (can(f.hasReverse)) out.push(AlarmType.ALARM_TYPE_BACKFLOW)
        out.push(AlarmType.ALARM_TYPE_NO_FLOW)
    }
    if (f.hasPressure) {
        out.push(AlarmType.ALARM_TYPE_PRESSURE_HIGH)
        out.push(AlarmType.ALARM_TYPE_PRESSURE_LOW)
    }
    if (f.hasElectricity && can(f.hasVoltage)) {
        out.push(AlarmType.ALARM_TYPE_SUPPLY_LOSS)
        out.push(AlarmType.ALARM_TYPE_UNDERVOLTAGE)
    }
    if (can(f.hasTamper)) out.push(AlarmType.ALARM_TYPE_TAMPER)
    if (can(f.hasMagnet)) out.push(AlarmType.ALARM_TYPE_MAGNETIC_FIELD)
    return out
}

const HYSTERESIS = 0.05

export class AlarmRules {
    private active: boolean[] = []
    /** Seconds of uninterrupted flow / no flow up to the last interval. */
    flowingS = 0
    dryS = 0

    private set(out: AlarmEdge[], type: number, raise: boolean, clear: boolean, value: number) {
        const on = !!this.active[type]
        if (!on && raise) {
            this.active[type] = true
            out.push({ type, active: true, value })
        } else if (on && clear) {
            this.active[type] = false
            out.push({ type, active: false, value })
        }
    }

    evaluate(r: IntervalReading, f: IntervalFlags, t: Tunables): AlarmEdge[] {
        const out: AlarmEdge[] = []
        if (f.hasWater) {
            const flowing = r.volumeMl > 0
            this.flowingS = flowing ? this.flowingS + f.intervalS : 0
            this.dryS = flowing ? 0 : this.dryS + f.intervalS
            // LEAK (FIWARE alarmFlowPersistence): flow in every interval for leakS
            this.set(out, AlarmType.ALARM_TYPE_LEAK, this.flowingS >= t.leakS, !flowing, this.flowingS)
            // BURST: mean flow rate of the interval, mL/min
            const rate = Math.round((r.volumeMl * 60) / f.intervalS)
            this.set(
                out,
                AlarmType.ALARM_TYPE_BURST,
                rate >= t.burstMlMin,
                rate < t.burstMlMin * (1 - HYSTERESIS),
                rate,
            )
            if (can(f.hasReverse))
                this.set(
                    out,
                    AlarmType.ALARM_TYPE_BACKFLOW,
                    r.reverseMl >= t.backflowMl,
                    r.reverseMl === 0,
                    r.reverseMl,
                )
            if (t.noFlowS > 0) this.set(out, AlarmType.ALARM_TYPE_NO_FLOW, this.dryS >= t.noFlowS, flowing, this.dryS)
        }
        if (f.hasPressure) {
            this.set(
                out,
                AlarmType.ALARM_TYPE_PRESSURE_LOW,
                r.pressureMin < t.pressureLowPa,
                r.pressureMin >= t.pressureLowPa * (1 + HYSTERESIS),
                r.pressureMin,
            )
            this.set(
                out,
                AlarmType.ALARM_TYPE_PRESSURE_HIGH,
                r.pressureMax > t.pressureHighPa,
                r.pressureMax <= t.pressureHighPa * (1 - HYSTERESIS),
                r.pressureMax,
            )
        }
        if (f.hasElectricity && can(f.hasVoltage)) {
            const v = r.voltageDv
            this.set(out, AlarmType.ALARM_TYPE_SUPPLY_LOSS, v < t.supplyLossDv, v >= t.supplyLossDv, v)
            this.set(
                out,
                AlarmType.ALARM_TYPE_UNDERVOLTAGE,
                v >= t.supplyLossDv && v < t.undervoltageDv,
                v >= t.undervoltageDv * (1 + HYSTERESIS / 5) || v < t.supplyLossDv,
                v,
            )
        }
        if (can(f.hasTamper)) this.set(out, AlarmType.ALARM_TYPE_TAMPER, r.tamper, !r.tamper, r.tamper ? 1 : 0)
        if (can(f.hasMagnet)) this.set(out, AlarmType.ALARM_TYPE_MAGNETIC_FIELD, r.magnet, !r.magnet, r.magnet ? 1 : 0)
        return out
    }
}
