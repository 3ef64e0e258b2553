// ADE7953 single-phase energy metering IC (Analog Devices data sheet ADE7953, Rev. B/C), the chip in
// Shelly 2.5 / Shelly EM plugs, on I2C. It measures RMS voltage, active power and active energy and
// serves the citymeter Electricity Meter service (services/electricitymeter.md).
//
// The register map and its I2C transport are in ade7953-registers.ts, the counts per unit and the
// unit's trim in ade7953-calibration.ts; this file sets the chip up, polls it and starts it.
import { readSetting } from "@devicescript/settings"
import { Ade7953Calibration, Ade7953Trim, energyCountsPerWh, NO_TRIM } from "./ade7953-calibration"
import {
    ADE,
    CONFIG_VALUE,
    fromBytes,
    RegisterBus,
    regBytes,
    SETTING_VALUE,
    toBytes,
    UNLOCK_KEY,
} from "./ade7953-registers"
import { EnergySource, SwitchableEnergy } from "./electricity"
import { measures } from "../hardware"

/** Counts the 24-bit accumulator advanced from `last` to `now`: positive-only, modulo 2^24. */
export function energyDelta(last: number, now: number): number {
    const d = now - last
    return d < 0 ? d + 2 ** 24 : d
}

export class Ade7953 {
    voltageDv = 0
    powerW = 0
    currentMa = 0
    /** AENERGYA counts since start (positive-only accumulation: imported energy). */
    energyCounts = 0
    /** Failed reads or writes, counted; the values keep their last reading meanwhile. */
    errors = 0
    version = -1
    private lastEnergy: number = undefined
    /** The poll timer startAde7953 runs; stop() ends it. */
    timer: number = undefined

    constructor(
        private readonly bus: RegisterBus,
        readonly cal: Ade7953Calibration,
        readonly trim: Ade7953Trim = NO_TRIM,
    ) {}

    async readReg(reg: number, signed: boolean): Promise<number> {
        return fromBytes(await this.bus.read(reg, regBytes(reg)), signed)
    }

    async writeReg(reg: number, v: number) {
        await this.bus.write(reg, toBytes(v, regBytes(reg)))
    }

    /** True when an ADE7953 answers: its version register reads. */
    async probe(): Promise<boolean> {
        try {
            this.version = await this.readReg(ADE.VERSION, false)
            return true
        } catch {
            return false
        }
    }

    /**
     * Power-up settings, read back: communication locked to I2C, the required 0x120 setting (after
     * its unlock), energy registers that accumulate instead of clearing on read (a failed read then
     * loses nothing), positive-only active energy. False when a value did not stick.
     */
    async setup(): Promise<boolean> {
        try {
            await this.writeReg(ADE.CONFIG, CONFIG_VALUE)
            await this.writeReg(ADE.UNLOCK, UNLOCK_KEY)
            await this.writeReg(ADE.SETTING, SETTING_VALUE)
            await this.writeReg(ADE.LCYCMODE, 0)
            await this.writeReg(ADE.ACCMODE, 1)
            const ok =
                (await this.readReg(ADE.CONFIG, false)) === CONFIG_VALUE &&
                (await this.readReg(ADE.SETTING, false)) === SETTING_VALUE &&
                (await this.readReg(ADE.LCYCMODE, false)) === 0 &&
                // ACCMODE's upper bits are live status (power sign, no-load): compare AWATTACC only
                ((await this.readReg(ADE.ACCMODE, false)) & 3) === 1
            if (ok) this.lastEnergy = await this.readReg(ADE.AENERGYA, false)
            return ok
        } catch {
            this.errors++
            return false
        }
    }

    /** One reading of every register; on a bus error the previous values stay and it is counted. */
    async poll(): Promise<boolean> {
        try {
            const v = await this.readReg(ADE.VRMS, false)
            const p = await this.readReg(ADE.AWATT, true)
            const i = await this.readReg(ADE.IRMSA, false)
            const e = await this.readReg(ADE.AENERGYA, false)
            const t = this.trim
            this.voltageDv = Math.round(((v - t.vOffset) * t.vGainPpm * 10) / 1000000 / this.cal.countsPerV)
            this.powerW = Math.round(((p - t.pOffset) * t.pGainPpm) / 1000000 / this.cal.countsPerW)
            this.currentMa = Math.round(((i - t.iOffset) * t.iGainPpm * 1000) / 1000000 / this.cal.countsPerA)
            if (this.lastEnergy !== undefined) this.energyCounts += energyDelta(this.lastEnergy, e)
            this.lastEnergy = e
            return true
        } catch {
            this.errors++
            return false
        }
    }

    /** Stops the periodic poll (the values keep their last reading). */
    stop() {
        if (this.timer !== undefined) clearInterval(this.timer)
        this.timer = undefined
    }

    /** Imported active energy since start, Wh, rounded down. */
    energyWh(): number {
        return Math.floor((this.energyCounts * this.trim.pGainPpm) / 1000000 / energyCountsPerWh(this.cal))
    }
}

/** The chip as the Electricity Meter service's source. */
export function ade7953Source(m: Ade7953): EnergySource {
    return { energyWh: () => m.energyWh(), powerW: () => m.powerW, voltageDv: () => m.voltageDv }
}

/** Poll period: far inside the ≥81 s AENERGYA takes to wrap even at full scale (maxReadGapS). */
export const POLL_MS = 1000
/**
 * Wait after power-up before the first probe: ESPHome's ade7953 component waits 100 ms before it
 * talks to the chip; a probe during the chip's own start reads nothing and the meter fell back to S0
 * for good (issue 20).
 */
export const SETTLE_MS = 100
/** Probe period while no chip answers: a chip that starts late, or is fitted later, is taken then. */
export const PROBE_RETRY_MS = 30000
/** Setting: the probe period in seconds, 1..PROBE_RETRY_MAX_S (tests shorten it; fielded meters keep 30). */
export const PROBE_RETRY_KEY = "ADE_RETRY_S"
export const PROBE_RETRY_MAX_S = 3600

/** The probe period from settings (ms); the default when unset, or refused and logged when out of bounds. */
export async function loadProbeRetryMs(): Promise<number> {
    const s = await readSetting<number>(PROBE_RETRY_KEY, PROBE_RETRY_MS / 1000)
    if (typeof s === "number" && Math.round(s) === s && s >= 1 && s <= PROBE_RETRY_MAX_S) return s * 1000
    console.log(`citymeter: settings refused: ${PROBE_RETRY_KEY} must be 1..${PROBE_RETRY_MAX_S} s; probing every 30 s`)
    return PROBE_RETRY_MS
}

/**
 * Probes an ADE7953 on `bus`, sets it up and polls it every POLL_MS: the driver when it answers and
 * takes its settings, undefined otherwise (no I2C on the board, no chip fitted, or a chip that
 * refused the settings).
 */
export async function startAde7953(
    bus: RegisterBus,
    cal: Ade7953Calibration,
    trim: Ade7953Trim = NO_TRIM,
): Promise<Ade7953> {
    const m = new Ade7953(bus, cal, trim)
    if (!(await m.probe())) return undefined
    if (!(await m.setup())) {
        console.log(`citymeter: ADE7953 v${m.version} did not take its settings`)
        return undefined
    }
    await m.poll()
    let logged = 0
    m.timer = setInterval(async () => {
        if (!(await m.poll()) && m.errors >= logged * 2) {
            logged = m.errors
            console.log(`citymeter: ADE7953 read failed (${m.errors} failures so far)`)
        }
    }, POLL_MS)
    return m
}

/**
 * The metering IC if it answers now, else probed again every `retryMs` until it does: then the
 * Electricity Meter service's source switches from `energy`'s S0 input to the IC, the energy
 * register continuing where S0 left it (SwitchableEnergy), and the meter measures voltage and power
 * from then on (hardware.ts measures; the next Birth lists them). Resolves with the IC's driver, or
 * undefined when it did not answer at the first probe. `stop` ends the probing and the polling (tests).
 */
export async function startMeteringIc(
    bus: RegisterBus,
    cal: Ade7953Calibration,
    trim: Ade7953Trim,
    energy: SwitchableEnergy,
    retryMs: number,
): Promise<{ ic: Ade7953; stop: () => void }> {
    const take = (m: Ade7953) => {
        energy.switchTo(ade7953Source(m))
        measures.voltage = true
        measures.power = true
        console.log(`citymeter: ADE7953 v${m.version} measures voltage, power and energy`)
    }
    const first = await startAde7953(bus, cal, trim)
    if (first) {
        take(first)
        return { ic: first, stop: () => first.stop() }
    }
    let late: Ade7953 = undefined
    measures.voltage = false
    measures.power = false
    let busy = false
    let timer = setInterval(async () => {
        if (busy || timer === undefined) return
        busy = true
        const m = await startAde7953(bus, cal, trim)
        busy = false
        if (!m || timer === undefined) return
        clearInterval(timer)
        timer = undefined
        late = m
        take(m)
        console.log(`citymeter: ADE7953 answered late: it counts energy from ${energy.energyWh()} Wh on`)
    }, retryMs)
    return {
        ic: undefined,
        stop: () => {
            if (timer !== undefined) clearInterval(timer)
            timer = undefined
            if (late) late.stop()
        },
    }
}
