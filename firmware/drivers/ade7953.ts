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
import * as ds from "@devicescript/core"
import { i2c } from "@devicescript/i2c"
import { SensorServer, startServer } from "@devicescript/server"

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

    constructor(
        private readonly bus: RegisterBus,
        readonly cal: Ade7953Calibration,
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
            this.voltageDv = Math.round((v * 10) / this.cal.countsPerV)
            this.powerW = Math.round(p / this.cal.countsPerW)
            this.currentMa = Math.round((i * 1000) / this.cal.countsPerA)
            if (this.lastEnergy !== undefined) this.energyCounts += energyDelta(this.lastEnergy, e)
            this.lastEnergy = e
            return true
        } catch {
            this.errors++
            return false
        }
    }

    /** Imported active energy since start, Wh, rounded down. */
    energyWh(): number {
        return Math.floor(this.energyCounts / energyCountsPerWh(this.cal))
    }
}

class Ade7953Server extends SensorServer implements ds.CitymeterElectricityMeterServerSpec {
    constructor(private readonly m: Ade7953) {
        super(ds.CitymeterElectricityMeter.spec)
    }
    reading() {
        return this.m.energyWh()
    }
    power() {
        return this.m.powerW
    }
    voltage() {
        return this.m.voltageDv
    }
}

/** Poll period: far inside the ≥81 s AENERGYA takes to wrap even at full scale (maxReadGapS). */
export const POLL_MS = 1000

/**
 * Starts the Electricity Meter service on an ADE7953 if one answers on `bus` and takes its setup;
 * undefined otherwise (no I2C on the board, no chip fitted, or a chip that refused the settings).
 */
export async function startAde7953(bus: RegisterBus, cal: Ade7953Calibration): Promise<Ade7953> {
    const m = new Ade7953(bus, cal)
    if (!(await m.probe())) return undefined
    if (!(await m.setup())) {
        console.log(`citymeter: ADE7953 v${m.version} did not take its settings`)
        return undefined
    }
    await m.poll()
    let logged = 0
    setInterval(async () => {
        if (!(await m.poll()) && m.errors >= logged * 2) {
            logged = m.errors
            console.log(`citymeter: ADE7953 read failed (${m.errors} failures so far)`)
        }
    }, POLL_MS)
    startServer(new Ade7953Server(m))
    console.log(`citymeter: ADE7953 v${m.version} measures voltage, power and energy`)
    return m
}
