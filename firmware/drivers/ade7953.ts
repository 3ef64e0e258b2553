// ADE7953 single-phase energy metering IC (Analog Devices data sheet ADE7953, Rev. B/C), the chip in
// Shelly 2.5 / Shelly EM plugs, on I2C. It measures RMS voltage, active power and active energy and
// serves the citymeter Electricity Meter service (services/electricitymeter.md).
//
// Data sheet facts used here:
// - "I2C Interface": 7-bit address 0111000 (0x38), at most 400 kHz; a 16-bit register address, MSB
//   first, then the data MSB first; a read writes the address and reads after a repeated start.
// - "ADE7953 Registers": 8-, 16-, 24- and 32-bit registers, the width given by the address block
//   (0x0xx, 0x7xx, 0x8xx: 8 bit; 0x1xx: 16; 0x2xx: 24; 0x3xx: 32). 0x2xx and 0x3xx are the same
//   cells; through 0x3xx the upper 8 bits are the sign extension of the 24-bit value. Table 13
//   (8-bit), Table 14 (16-bit), Table 15 (24/32-bit); LCYCMODE Table 17, CONFIG Table 18, ACCMODE
//   Table 21.
// - "Power-Up Procedure", "Required Register Setting": write 0xAD to 0x0FE, then 0x0030 to the
//   reserved register 0x120, which only takes the write right after that unlock.
// - "Active Energy Calculation": active power is integrated into AENERGYA at up to ≈206.9 kHz with
//   full-scale inputs; with full-scale inputs AWATT reads ≈4,862,401. The 24-bit AENERGYA wraps.
import { i2c } from "@devicescript/i2c"
import { readSetting } from "@devicescript/settings"
import { EnergySource, SwitchableEnergy } from "./electricity"
import { measures } from "../hardware"

export const ADE7953_I2C_ADDRESS = 0x38

export const ADE = {
    /** 8 bit, default 0x40: bit 6 RSTREAD, energy registers cleared by a read (Table 17). */
    LCYCMODE: 0x004,
    /** 8 bit: 0xAD here unlocks register 0x120 for the next write. */
    UNLOCK: 0x0fe,
    /** 8 bit, read only: silicon version. */
    VERSION: 0x702,
    /** 16 bit, default 0x8004 (Table 18): bit 2 HPFEN; bit 15 COMM_LOCK, 0 = locked to this port. */
    CONFIG: 0x102,
    /** 16 bit, reserved: 0x0030 for the data sheet's specified performance. */
    SETTING: 0x120,
    /**
     * 24 bit, default 0 (Table 21): bits 1:0 AWATTACC, 01 = positive-only accumulation; bit 10
     * APSIGN_A and bit 16 ACTNLOAD_A are status bits the chip sets.
     */
    ACCMODE: 0x201,
    /** 32-bit access, signed: instantaneous active power, channel A. */
    AWATT: 0x312,
    /** 32-bit access, unsigned: RMS current, channel A. */
    IRMSA: 0x31a,
    /** 32-bit access, unsigned: RMS voltage. */
    VRMS: 0x31c,
    /** 24-bit access, signed two's complement: active energy, channel A. */
    AENERGYA: 0x21e,
}

export const UNLOCK_KEY = 0xad
export const SETTING_VALUE = 0x0030
/** HPF on, communication locked to I2C (COMM_LOCK cleared), everything else at its default. */
export const CONFIG_VALUE = 0x0004
/** Data sheet "Active Energy Calculation": energy counts per second per AWATT count. */
export const ENERGY_RATE_PER_AWATT = 206900 / 4862401
/**
 * Data sheet full scale (PGA gain 1): 0.5 V peak (0.3536 V rms) at an input gives IRMSA/VRMS
 * 9,032,007; both inputs at full scale in phase give AWATT 4,862,401 ("Current Channel RMS",
 * "Voltage Channel RMS", "Active Power Calculation").
 */
export const FULL_SCALE = { inputVrms: 0.5 / Math.SQRT2, rms: 9032007, awatt: 4862401 }

/**
 * Counts per V, A and W of a front end from its circuit: line volts to input volts
 * (`voltsPerLineVolt`, a divider's ratio) and amperes to input volts (`voltsPerAmp`, a shunt's ohms
 * or a CT's burden over its turns ratio), from the data sheet's full scale (FULL_SCALE).
 */
export function frontEndCounts(voltsPerLineVolt: number, voltsPerAmp: number): Ade7953Calibration {
    const perInputV = FULL_SCALE.rms / FULL_SCALE.inputVrms
    return {
        countsPerV: perInputV * voltsPerLineVolt,
        countsPerA: perInputV * voltsPerAmp,
        countsPerW: (FULL_SCALE.awatt * voltsPerLineVolt * voltsPerAmp) / (FULL_SCALE.inputVrms * FULL_SCALE.inputVrms),
    }
}

/** Bytes of a register, from its address block (data sheet "ADE7953 Registers"). */
export function regBytes(reg: number): number {
    const block = reg >> 8
    if (block === 1) return 2
    if (block === 2) return 3
    if (block === 3) return 4
    return 1
}

/** Big-endian bytes to a number; `signed` reads the top bit as the two's complement sign. */
export function fromBytes(b: Buffer, signed: boolean): number {
    let v = 0
    for (let i = 0; i < b.length; ++i) v = v * 256 + b.getAt(i, "u8")
    const top = 2 ** (8 * b.length)
    return signed && v >= top / 2 ? v - top : v
}

/** `v` as `n` big-endian bytes (negative values in two's complement). */
export function toBytes(v: number, n: number): Buffer {
    const b = Buffer.alloc(n)
    let x = v < 0 ? v + 2 ** (8 * n) : v
    for (let i = n - 1; i >= 0; --i) {
        const q = Math.floor(x / 256)
        b.setAt(i, "u8", x - q * 256)
        x = q
    }
    return b
}

/** A register-addressed bus: I2C on a board, a register-level fake in the tests. Errors throw. */
export interface RegisterBus {
    read(reg: number, bytes: number): Promise<Buffer>
    write(reg: number, data: Buffer): Promise<void>
}

/** The ADE7953's I2C framing over DeviceScript's I2C (@devicescript/i2c, ESP32 and RP2040 runtimes). */
export class I2cRegisterBus implements RegisterBus {
    constructor(readonly address: number) {}
    async read(reg: number, bytes: number): Promise<Buffer> {
        return await i2c.xfer(this.address, toBytes(reg, 2), bytes)
    }
    async write(reg: number, data: Buffer): Promise<void> {
        await i2c.xfer(this.address, Buffer.concat(toBytes(reg, 2), data))
    }
}

/**
 * Register counts per unit of the analog front end: they depend on the shunt or CT, the voltage
 * divider and the PGA gains, so they are per board and need a calibration against a reference meter.
 */
export interface Ade7953Calibration {
    countsPerV: number
    countsPerA: number
    countsPerW: number
}

/**
 * The Shelly 2.5 / Shelly EM front end with every gain at its default (PGA 1, xGAIN 0x400000): VRMS
 * 26000 counts/V, IRMSA 100000 counts/A, AWATT 154 counts/W — the figures Tasmota (xnrg_07) and
 * ESPHome (ade7953) ship for those plugs, measured there, not checked here (no hardware).
 */
export const SHELLY_FRONT_END: Ade7953Calibration = { countsPerV: 26000, countsPerA: 100000, countsPerW: 154 }

/**
 * AENERGYA counts per Wh: AWATT counts/W × the data sheet's accumulation rate per AWATT count ×
 * 3600 s. For the Shelly front end 23,590 (ESPHome's empirical 154² = 23,716 is 0.5 % off).
 */
export function energyCountsPerWh(c: Ade7953Calibration): number {
    return c.countsPerW * ENERGY_RATE_PER_AWATT * 3600
}

/** Longest time between two energy reads before AENERGYA (24 bit) can wrap unseen, at `powerW`. */
export function maxReadGapS(c: Ade7953Calibration, powerW: number): number {
    return 2 ** 24 / (powerW * c.countsPerW * ENERGY_RATE_PER_AWATT)
}

/**
 * A unit's calibration against a reference meter (settings ADE_CAL): gain in ppm (1,000,000 = 1) and
 * offset in register counts, of voltage, current and active power: value = (register − offset) ×
 * gain / counts per unit. Energy takes the power gain; the power offset corrects the power reading
 * only (a no-load offset in the energy register needs the chip's own AWATTOS, not written here).
 */
export interface Ade7953Trim {
    vGainPpm: number
    vOffset: number
    iGainPpm: number
    iOffset: number
    pGainPpm: number
    pOffset: number
}

export const NO_TRIM: Ade7953Trim = {
    vGainPpm: 1000000,
    vOffset: 0,
    iGainPpm: 1000000,
    iOffset: 0,
    pGainPpm: 1000000,
    pOffset: 0,
}
/** Settings key of the unit's calibration: JSON [vGainPpm, vOffset, iGainPpm, iOffset, pGainPpm, pOffset]. */
export const ADE_CAL_KEY = "ADE_CAL"

/** Why a calibration is unusable (gains 0.5..2, offsets within ±1e6 counts), or undefined. */
export function trimError(t: Ade7953Trim): string {
    for (const g of [t.vGainPpm, t.iGainPpm, t.pGainPpm])
        if (typeof g !== "number" || Math.round(g) !== g || g < 500000 || g > 2000000)
            return `ADE_CAL gains must be whole ppm in 500000..2000000 (got ${g})`
    for (const o of [t.vOffset, t.iOffset, t.pOffset])
        if (typeof o !== "number" || Math.round(o) !== o || Math.abs(o) > 1000000)
            return `ADE_CAL offsets must be whole counts within +-1000000 (got ${o})`
    return undefined
}

/** The unit's calibration from settings; none (or an unusable one, logged): NO_TRIM. */
export async function loadAde7953Trim(): Promise<Ade7953Trim> {
    const a = await readSetting<number[]>(ADE_CAL_KEY, undefined)
    if (a === undefined || a === null) return NO_TRIM
    const t: Ade7953Trim =
        Array.isArray(a) && a.length === 6
            ? { vGainPpm: a[0], vOffset: a[1], iGainPpm: a[2], iOffset: a[3], pGainPpm: a[4], pOffset: a[5] }
            : undefined
    const why = t ? trimError(t) : "ADE_CAL must be [vGainPpm, vOffset, iGainPpm, iOffset, pGainPpm, pOffset]"
    if (why) {
        console.log(`citymeter: settings refused: ${why}; the ADE7953 runs uncalibrated`)
        return NO_TRIM
    }
    return t
}

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
