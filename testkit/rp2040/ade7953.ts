// An ADE7953 metering IC on the emulated I2C bus, written from the Analog Devices ADE7953 data
// sheet (Rev. C), independently of the firmware's driver (importing its constants would make a
// test of that driver circular).
//
// From the data sheet:
// - I2C: 7-bit address 0x38. A write is the 16-bit register address, MSB first, then the value MSB
//   first; a read writes the address, then reads the value after a repeated start.
// - Register width by address block: 0x000–0x0FF 8 bit, 0x100–0x1FF 16 bit, 0x200–0x2FF 24 bit,
//   0x300–0x3FF the same registers as 32 bit (signed ones sign-extended), 0x702 (Version) and
//   0x800 (EX_REF) 8 bit.
// - LCYCMODE 0x004, default 0x40: bit 6 RSTREAD, the energy registers clear when read.
// - CONFIG 0x102, default 0x8004. 0xAD written to 0x0FE unlocks the reserved register 0x120 for
//   the next write (the "required register setting" 0x0030).
// - 24/32-bit: AWATT 0x12, BWATT 0x13 (active power), AVAR 0x14, BVAR 0x15, IRMSA 0x1A, IRMSB 0x1B,
//   VRMS 0x1C, AENERGYA 0x1E, AENERGYB 0x1F, RENERGYA 0x20, RENERGYB 0x21 (offsets in the 0x200 /
//   0x300 blocks); ACCMODE 0x201; AIGAIN 0x280, AVGAIN 0x281, AWGAIN 0x282 (default 0x400000).
// - Active energy: AWATT integrated into AENERGYA; with full-scale inputs AWATT reads about
//   4,862,401 and the energy register counts at about 206.9 kHz.
//
// The register values (VRMS, IRMSA, AWATT counts) are what a test sets: converting volts to
// counts depends on the board's front end, which is the driver's business.

import type { I2cDevice } from "./i2c.js"

export const ADE7953_ADDRESS = 0x38

export const ADE7953_REG = {
  LCYCMODE: 0x004,
  UNLOCK: 0x0fe,
  CONFIG: 0x102,
  RESERVED_120: 0x120,
  ACCMODE: 0x201,
  AWATT: 0x212,
  BWATT: 0x213,
  AVAR: 0x214,
  BVAR: 0x215,
  IRMSA: 0x21a,
  IRMSB: 0x21b,
  VRMS: 0x21c,
  AENERGYA: 0x21e,
  AENERGYB: 0x21f,
  RENERGYA: 0x220,
  RENERGYB: 0x221,
  AIGAIN: 0x280,
  AVGAIN: 0x281,
  AWGAIN: 0x282,
  VERSION: 0x702,
} as const

const SIGNED = new Set([0x12, 0x13, 0x14, 0x15, 0x1e, 0x1f, 0x20, 0x21])
const ENERGY = new Set([0x1e, 0x1f, 0x20, 0x21])
/** Energy counts per second per AWATT count (data sheet: ≈206.9 kHz at AWATT ≈ 4,862,401). */
export const ADE7953_ENERGY_RATE = 206900 / 4862401

/** Width in bytes of a register by its address (data sheet register map). */
export function ade7953Width(reg: number): number {
  const block = reg >> 8
  return block === 1 ? 2 : block === 2 ? 3 : block === 3 ? 4 : 1
}

export interface Ade7953Options {
  /** NACK everything (not fitted). Default false. */
  absent?: boolean
  /** NACK until this emulated time (ms since reset): a chip still in its power-up. */
  answersAfterMs?: number
  /** Value of the Version register 0x702. Default 1. */
  version?: number
}

export class Ade7953Model implements I2cDevice {
  absent: boolean
  answersAfterMs: number
  /** Cells by their 24-bit (0x2xx) or own address. */
  private readonly regs = new Map<number, number>()
  private energyFraction = new Map<number, number>()
  private lastEnergyMs = 0
  private addr: number[] = []
  private data: number[] = []
  private out: number[] = []
  private unlocked = false
  /** Every register write, in order: [register address as sent, value]. */
  readonly writes: Array<[number, number]> = []
  /** Every register read, in order (the address as sent). */
  readonly reads: number[] = []

  constructor(
    private readonly nowMs: () => number,
    o: Ade7953Options = {},
  ) {
    this.absent = o.absent ?? false
    this.answersAfterMs = o.answersAfterMs ?? 0
    this.regs.set(ADE7953_REG.LCYCMODE, 0x40)
    this.regs.set(ADE7953_REG.CONFIG, 0x8004)
    this.regs.set(ADE7953_REG.VERSION, o.version ?? 1)
    for (const g of [0x280, 0x281, 0x282, 0x283, 0x284, 0x28c, 0x28d, 0x28e, 0x28f, 0x290]) this.regs.set(g, 0x400000)
  }

  /** Sets a register's value (its 0x2xx or 0x3xx address), e.g. VRMS counts. */
  set(reg: number, value: number): void {
    this.accumulate()
    this.regs.set(cell(reg), value < 0 ? value + 0x1000000 : value)
  }

  /** A register's stored value (without clearing energy registers). */
  get(reg: number): number {
    this.accumulate()
    return this.regs.get(cell(reg)) ?? 0
  }

  connect(): boolean {
    if (this.absent || this.nowMs() < this.answersAfterMs) return false
    this.data = []
    return true
  }

  write(byte: number): boolean {
    if (this.addr.length < 2) {
      this.addr.push(byte)
      if (this.addr.length === 2) this.prepareRead()
    } else this.data.push(byte)
    return true
  }

  read(): number {
    return this.out.shift() ?? 0xff
  }

  stop(): void {
    if (this.addr.length === 2 && this.data.length > 0) {
      const reg = (this.addr[0] << 8) | this.addr[1]
      const width = ade7953Width(reg)
      if (this.data.length === width)
        this.store(
          reg,
          this.data.reduce((v, b) => v * 256 + b, 0),
        )
    }
    this.addr = []
    this.data = []
  }

  /** The address is complete: have the value ready in case a repeated start reads it. */
  private prepareRead() {
    const reg = (this.addr[0] << 8) | this.addr[1]
    this.accumulate()
    const width = ade7953Width(reg)
    let v = this.regs.get(cell(reg)) ?? 0
    if (width === 4 && SIGNED.has(reg & 0xff) && v & 0x800000) v = v - 0x1000000 // sign-extend
    const bytes: number[] = []
    let x = v < 0 ? v + 2 ** (8 * width) : v
    for (let i = 0; i < width; i++) {
      bytes.unshift(x % 256)
      x = Math.floor(x / 256)
    }
    this.out = bytes
    this.reads.push(reg)
    if (ENERGY.has(reg & 0xff) && reg >> 8 >= 2 && (this.regs.get(ADE7953_REG.LCYCMODE) ?? 0) & 0x40)
      this.regs.set(cell(reg), 0) // RSTREAD: cleared by the read
  }

  private store(reg: number, value: number) {
    this.writes.push([reg, value])
    if (reg === ADE7953_REG.UNLOCK) {
      this.unlocked = value === 0xad
      return
    }
    if (reg === ADE7953_REG.RESERVED_120 && !this.unlocked) return
    this.unlocked = false
    this.accumulate()
    this.regs.set(cell(reg), reg >> 8 === 3 ? value & 0xffffff : value)
  }

  /** Integrates AWATT / BWATT / AVAR / BVAR into the energy registers up to now (24 bit, wrapping). */
  private accumulate() {
    const now = this.nowMs()
    const dt = (now - this.lastEnergyMs) / 1000
    this.lastEnergyMs = now
    if (dt <= 0) return
    for (const [power, energy] of [
      [0x212, 0x21e],
      [0x213, 0x21f],
      [0x214, 0x220],
      [0x215, 0x221],
    ]) {
      const p = signed24(this.regs.get(power) ?? 0)
      if (!p) continue
      const total = (this.energyFraction.get(energy) ?? 0) + p * ADE7953_ENERGY_RATE * dt
      const whole = Math.trunc(total)
      this.energyFraction.set(energy, total - whole)
      const e = signed24(this.regs.get(energy) ?? 0) + whole
      this.regs.set(energy, ((e % 0x1000000) + 0x1000000) % 0x1000000)
    }
  }
}

/** 0x3xx registers are the 0x2xx cells. */
const cell = (reg: number) => (reg >> 8 === 3 ? reg - 0x100 : reg)
const signed24 = (v: number) => (v & 0x800000 ? v - 0x1000000 : v)
