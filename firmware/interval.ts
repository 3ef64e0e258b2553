// What one closed interval showed: the sampler produces both, the alarm rules and the meter loop
// read them. They live apart from either so that sampler.ts and alarms.ts need not import each other.

/** One interval's readings, summarised by the sampler. */
export interface IntervalReading {
    volumeMl: number
    reverseMl: number
    energyWh: number
    powerW: number
    voltageDv: number
    pressureAvg: number
    pressureMin: number
    pressureMax: number
    /** Tamper input seen active at any sample of the interval (case switch). */
    tamper: boolean
    /** Magnetic field seen at any sample of the interval (magnet tamper). */
    magnet: boolean
}

/** What one interval showed, beyond the sampler's readings. */
export interface IntervalFlags {
    intervalS: number
    hasWater: boolean
    hasElectricity: boolean
    hasPressure: boolean
    /**
     * What the meter can really measure (an alarm needs a sensor behind it); absent
     * means it can. A board's reed pulse counter has no direction, an S0 output no voltage and no
     * measured power (a metering IC has both).
     */
    hasReverse?: boolean
    hasVoltage?: boolean
    hasPower?: boolean
    hasTamper?: boolean
    hasMagnet?: boolean
}
