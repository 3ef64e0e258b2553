// Sensors → interval readings → reading batches.
// Volume and energy come from cumulative counters (differences are exact whatever the sampling
// jitter); power, voltage and pressure are sampled every tick and summarised per interval.
import * as ds from "@devicescript/core"
import { ReadingBatch } from "./frames"
import { measures } from "./hardware"
import { IntervalFlags, IntervalReading } from "./interval"
import { Totals } from "./queue-slot"

const U32 = 4294967296

/**
 * Increase of a u32 hardware counter between two reads. A counter that went down either wrapped
 * (it was in the upper half, now in the lower half) or restarted from zero (sensor power cycle).
 */
export function counterDelta(prev: number, now: number): number {
    if (now >= prev) return now - prev
    if (prev >= U32 / 2 && now < U32 / 2) return now + U32 - prev
    return now
}

/**
 * A monotonic register fed by a wrapping hardware counter. A meter with no persisted total
 * (first boot ever, total < 0) adopts the sensor's counter as its register.
 */
export class Totalizer {
    /** Raw counter value at the last update; undefined until the first read after boot. */
    lastRaw: number | undefined = undefined
    constructor(public total: number) {}

    /** Takes a raw counter read; returns the increase since the previous read (0 on the first). */
    update(raw: number): number {
        if (this.lastRaw === undefined) {
            this.lastRaw = raw
            if (this.total < 0) this.total = raw
            return 0
        }
        const d = counterDelta(this.lastRaw, raw)
        this.lastRaw = raw
        this.total = this.total + d
        return d
    }
}

export class Stats {
    n = 0
    sum = 0
    min = 0
    max = 0
    add(v: number) {
        if (this.n === 0) {
            this.min = v
            this.max = v
        } else {
            if (v < this.min) this.min = v
            if (v > this.max) this.max = v
        }
        this.n = this.n + 1
        this.sum = this.sum + v
    }
    mean(): number {
        return this.n ? Math.round(this.sum / this.n) : 0
    }
}

export interface Sensors {
    flow: ds.CitymeterWaterFlow
    electricity: ds.CitymeterElectricityMeter
    pressure: ds.CitymeterWaterPressure
    tamper: ds.Button
    magnet: ds.MagneticFieldLevel
}

function rawOrNone(t: Totalizer): number {
    return t.lastRaw === undefined ? -1 : t.lastRaw
}

/** Accumulates one interval at a time from the sensors. */
export class Sampler {
    readonly water: Totalizer
    readonly reverse: Totalizer
    readonly energy: Totalizer
    private power = new Stats()
    private voltage = new Stats()
    private pressure = new Stats()
    private volumeMl = 0
    private reverseMl = 0
    private energyWh = 0
    private tamper = false
    private magnet = false
    hasWater = false
    hasElectricity = false
    hasPressure = false
    hasTamper = false
    hasMagnet = false

    /**
     * `saved`: the totals saved with the last frame, and the counter values they include: pulses
     * counted while the meter was off are added on the first read (or, if the sensor restarted
     * too, everything since its restart).
     */
    constructor(
        private readonly sensors: Sensors,
        saved: Totals,
    ) {
        this.water = new Totalizer(saved.waterMl)
        this.reverse = new Totalizer(-1)
        this.energy = new Totalizer(saved.energyWh)
        if (saved.waterMl >= 0 && saved.waterRaw >= 0) this.water.lastRaw = saved.waterRaw
        if (saved.reverseRaw >= 0) this.reverse.lastRaw = saved.reverseRaw
        if (saved.energyWh >= 0 && saved.energyRaw >= 0) this.energy.lastRaw = saved.energyRaw
    }

    /** The totals and the counter values they include, to be saved with the frame that carries them. */
    totals(): Totals {
        return {
            waterMl: this.water.total,
            waterRaw: rawOrNone(this.water),
            reverseRaw: rawOrNone(this.reverse),
            energyWh: this.energy.total,
            energyRaw: rawOrNone(this.energy),
        }
    }

    /** What this meter measures: bound sensors, less what the board's drivers cannot (hardware.ts). */
    capabilities(intervalS: number): IntervalFlags {
        return {
            intervalS,
            hasWater: this.hasWater,
            hasElectricity: this.hasElectricity,
            hasPressure: this.hasPressure,
            hasReverse: measures.reverseFlow,
            hasVoltage: measures.voltage,
            hasPower: measures.power,
            hasTamper: this.hasTamper,
            hasMagnet: this.hasMagnet,
        }
    }

    /** One sample of every bound sensor. */
    async sample() {
        const { flow, electricity, pressure, tamper, magnet } = this.sensors
        if (flow.isBound) {
            this.hasWater = true
            this.volumeMl += this.water.update(await flow.reading.read())
            this.reverseMl += this.reverse.update(await flow.reverseVolume.read())
        }
        if (electricity.isBound) {
            this.hasElectricity = true
            this.energyWh += this.energy.update(await electricity.reading.read())
            this.power.add(await electricity.power.read())
            this.voltage.add(await electricity.voltage.read())
        }
        if (pressure.isBound) {
            this.hasPressure = true
            this.pressure.add(await pressure.reading.read())
        }
        if (tamper.isBound) {
            this.hasTamper = true
            if ((await tamper.reading.read()) >= 0.5) this.tamper = true
        }
        if (magnet.isBound) {
            this.hasMagnet = true
            if (Math.abs(await magnet.reading.read()) >= 0.5) this.magnet = true
        }
    }

    /** Closes the current interval and starts the next. */
    close(): IntervalReading {
        const r: IntervalReading = {
            volumeMl: this.volumeMl,
            reverseMl: this.reverseMl,
            energyWh: this.energyWh,
            powerW: this.power.mean(),
            voltageDv: this.voltage.mean(),
            pressureAvg: this.pressure.mean(),
            pressureMin: this.pressure.min,
            pressureMax: this.pressure.max,
            tamper: this.tamper,
            magnet: this.magnet,
        }
        this.tamper = false
        this.magnet = false
        this.volumeMl = 0
        this.reverseMl = 0
        this.energyWh = 0
        this.power = new Stats()
        this.voltage = new Stats()
        this.pressure = new Stats()
        return r
    }
}

/** Builds a ReadingBatch from consecutive intervals (oldest first). */
export function toBatch(
    intervals: IntervalReading[],
    startS: number,
    timeSynced: boolean,
    intervalS: number,
    sampler: Sampler,
): ReadingBatch {
    const b: ReadingBatch = { startS, timeSynced, intervalS }
    if (sampler.hasWater) {
        const reverse = intervals.map((r) => r.reverseMl)
        b.water = {
            totalMl: sampler.water.total,
            volumeMl: intervals.map((r) => r.volumeMl),
            reverseMl: reverse.some((v) => v !== 0) ? reverse : undefined,
        }
    }
    if (sampler.hasElectricity)
        b.electricity = {
            totalWh: sampler.energy.total,
            energyWh: intervals.map((r) => r.energyWh),
            // only what the hardware measures (hardware.ts): an S0-only board sends energy alone
            powerW: measures.power ? intervals.map((r) => r.powerW) : undefined,
            // delta-encoded (proto voltage_delta_dv): a steady line costs a byte per interval
            voltageDeltaDv: measures.voltage
                ? intervals.map((r, i) => (i === 0 ? r.voltageDv : r.voltageDv - intervals[i - 1].voltageDv))
                : undefined,
        }
    if (sampler.hasPressure)
        b.pressure = {
            avgPa: intervals.map((r) => r.pressureAvg),
            belowAvgPa: intervals.map((r) => r.pressureAvg - r.pressureMin),
            aboveAvgPa: intervals.map((r) => r.pressureMax - r.pressureAvg),
        }
    return b
}
