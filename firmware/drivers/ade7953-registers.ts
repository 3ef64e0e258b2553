// The ADE7953 energy metering IC's registers (Analog Devices data sheet ADE7953, Rev. B/C) and the
// I2C transport to them; the driver is ade7953.ts.
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
import { i2c } from "@devicescript/i2c"

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
