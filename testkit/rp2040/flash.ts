// A serial NOR flash chip behind the RP2040's SSI, for the emulated board. rp2040js 1.4.1 leaves
// the SSI a stub (`peripherals/ssi.js`: every DR0 read returns 0, programs and erases do nothing)
// and IO_QSPI unimplemented, so the runtime's device id (the flash unique id) is 0 and no setting
// survives a reboot. This model replaces both.
//
// What drives it (pico-sdk 1.4.0 `src/rp2_common/hardware_flash/flash.c` and the B1 boot ROM):
// - chip select is forced through IO_QSPI GPIO_QSPI_SS_CTRL.OUTOVER (offset 0x0c, bits 9:8;
//   2 = drive low = selected, 3 = drive high; `hardware/regs/io_qspi.h`), `flash_cs_force()`;
// - bytes go one at a time through SSI DR0 (offset 0x60), each write clocking one byte back into
//   the RX FIFO, gated by SSI SR.TFNF (bit 1) and SR.RFNE (bit 3) (`flash_do_cmd`, the ROM's
//   `flash_put_get`);
// - `flash_get_unique_id`: 0x4B, 4 dummy bytes, 8 id bytes; `flash_range_program`: 0x06 then 0x02 +
//   24-bit address + data, polling 0x05 until BUSY clears; `flash_range_erase`: 0x06 then 0x20
//   (4 KB sector) or 0xD8 (64 KB block, when aligned and long enough).
// The runtime programs whole 256-byte pages and erases 4 KB sectors of its store
// (devicescript-pico `src/flash.c`: `flash_range_program(.., FLASH_PAGE_SIZE)`,
// `flash_range_erase(.., JD_FLASH_PAGE_SIZE)`). boot2 talks to the chip with the SSI's own chip
// select (OUTOVER normal): there a transfer ends when the CPU starts writing again after reading
// the RX FIFO empty, or when the SSI is disabled.

import type { RP2040 } from "rp2040js"

export const XIP_BASE = 0x10000000
const PAGE = 256

export type FlashOpKind = "program" | "erase-sector" | "erase-block32" | "erase-block64" | "erase-chip"

export interface FlashOp {
  /** 0-based number of this program/erase since the board was made. */
  index: number
  kind: FlashOpKind
  /** XIP address of the first byte (0x10000000 + flash offset). */
  address: number
  length: number
  /** Emulated time when chip select rose and the chip started the operation, ms since reset. */
  emulatedMs: number
  /** Set when a power cut hit this operation: the fraction of it that was done. */
  cutAtFraction?: number
}

/**
 * Decides, for each program/erase, whether the power fails during it: return a fraction in [0, 1]
 * of the operation that is done before the cut, or undefined to complete it.
 */
export type FlashCutHook = (op: FlashOp) => number | undefined

export class FlashChip {
  readonly ops: FlashOp[] = []
  private selected = false
  private cmd = -1
  private count = 0
  private address = 0
  private data: number[] = []
  private writeEnabled = false
  /** The status register 2 the boot2 QE check reads: QE (bit 1) already set, so it writes nothing. */
  private status2 = 0x02
  cutHook?: FlashCutHook
  /** Called after a power cut was applied inside an operation. */
  onPowerCut?: (op: FlashOp) => void

  constructor(
    /** The flash image the CPU reads through XIP (rp2040.flash). */
    readonly image: Uint8Array,
    readonly uniqueId: Uint8Array,
    private readonly nowMs: () => number,
  ) {
    if (uniqueId.length !== 8) throw new Error("a flash unique id is 8 bytes")
  }

  begin(): void {
    if (this.selected) this.end()
    this.selected = true
    this.cmd = -1
    this.count = 0
    this.address = 0
    this.data = []
  }

  /** One byte out on the bus, one byte back. */
  transfer(byte: number): number {
    if (!this.selected) this.begin()
    const n = this.count++
    if (n === 0) {
      this.cmd = byte
      if (byte === 0x06) this.writeEnabled = true
      if (byte === 0x04) this.writeEnabled = false
      return 0xff
    }
    switch (this.cmd) {
      case 0x05: // read status register 1: BUSY bit 0 (never: operations finish at chip select), WEL bit 1
        return this.writeEnabled ? 0x02 : 0x00
      case 0x35: // read status register 2
        return this.status2
      case 0x9f: // JEDEC id: Winbond, 16 Mbit
        return [0xef, 0x40, 0x15][n - 1] ?? 0xff
      case 0x4b: // read unique id: 4 dummy bytes, then the 8 id bytes
        return n >= 5 && n < 13 ? this.uniqueId[n - 5] : 0xff
      case 0x03: // read data: 24-bit address, then bytes
      case 0x0b: // fast read: 24-bit address, one dummy byte, then bytes
        if (n <= 3) {
          this.address = ((this.address << 8) | byte) & 0xffffff
          return 0xff
        }
        if (this.cmd === 0x0b && n === 4) return 0xff
        return this.image[this.address++ % this.image.length]
      case 0x02:
      case 0x20:
      case 0x52:
      case 0xd8:
        if (n <= 3) this.address = ((this.address << 8) | byte) & 0xffffff
        else if (this.cmd === 0x02) this.data.push(byte)
        return 0xff
      default:
        return 0xff
    }
  }

  /** Chip select rises: a program or erase takes effect now. */
  end(): void {
    if (!this.selected) return
    this.selected = false
    const kind = opKind(this.cmd)
    if (kind === "erase-chip" && this.count === 1 && this.writeEnabled) this.apply(kind, 0, this.image.length)
    else if (kind && kind !== "erase-chip" && this.count >= 4 && this.writeEnabled) {
      const len = kind === "program" ? this.data.length : ERASE_LENGTH[kind]
      const start = kind === "program" ? this.address : this.address & ~(len - 1)
      if (len > 0) this.apply(kind, start, len)
    }
    this.cmd = -1
  }

  private apply(kind: FlashOpKind, offset: number, length: number) {
    this.writeEnabled = false
    const op: FlashOp = { index: this.ops.length, kind, address: XIP_BASE + offset, length, emulatedMs: this.nowMs() }
    this.ops.push(op)
    const fraction = this.cutHook?.(op)
    const done = fraction === undefined ? length : Math.max(0, Math.min(length, Math.floor(length * fraction)))
    if (kind === "program") {
      // NOR programming only clears bits; the address wraps inside its 256-byte page
      const page = offset & ~(PAGE - 1)
      for (let i = 0; i < done; i++) {
        const at = page + ((offset + i) & (PAGE - 1))
        this.image[at] &= this.data[i]
      }
    } else this.image.fill(0xff, offset, offset + done)
    if (fraction !== undefined) {
      op.cutAtFraction = fraction
      this.onPowerCut?.(op)
    }
  }
}

const ERASE_LENGTH = { "erase-sector": 4096, "erase-block32": 32768, "erase-block64": 65536, program: 0 } as const

function opKind(cmd: number): FlashOpKind | undefined {
  switch (cmd) {
    case 0x02:
      return "program"
    case 0x20:
      return "erase-sector"
    case 0x52:
      return "erase-block32"
    case 0xd8:
      return "erase-block64"
    case 0xc7:
    case 0x60:
      return "erase-chip"
  }
  return undefined
}

// SSI register offsets (RP2040 datasheet 4.10.13; rp2040js `peripherals/ssi.js` names them too)
const SSI_SSIENR = 0x08
const SSI_TXFLR = 0x20
const SSI_RXFLR = 0x24
const SSI_SR = 0x28
const SSI_IDR = 0x58
const SSI_VERSION_ID = 0x5c
const SSI_DR0 = 0x60
const SR_TFNF = 1 << 1
const SR_TFE = 1 << 2
const SR_RFNE = 1 << 3

/** The SSI with a real RX FIFO, feeding bytes written to DR0 to the flash chip. */
class SsiPeripheral {
  private readonly regs = new Map<number, number>()
  private readonly rx: number[] = []
  /** Chip select forced low through IO_QSPI (else the SSI's own chip select). */
  forced = false
  private readSinceWrite = false

  constructor(private readonly chip: FlashChip) {}

  readUint32(offset: number): number {
    switch (offset) {
      case SSI_SR:
        return SR_TFNF | SR_TFE | (this.rx.length ? SR_RFNE : 0)
      case SSI_TXFLR:
        return 0
      case SSI_RXFLR:
        return this.rx.length
      case SSI_IDR:
        return 0x51535049
      case SSI_VERSION_ID:
        return 0x3430312a
      case SSI_DR0:
        this.readSinceWrite = true
        return this.rx.shift() ?? 0
    }
    return this.regs.get(offset) ?? 0
  }

  writeUint32(offset: number, value: number): void {
    if (offset === SSI_DR0) {
      // with the SSI's own chip select, a write after the RX FIFO was read empty starts a new transfer
      if (!this.forced && this.readSinceWrite && this.rx.length === 0) this.chip.end()
      this.readSinceWrite = false
      this.rx.push(this.chip.transfer(value & 0xff))
      if (this.rx.length > 16) this.rx.shift()
      return
    }
    if (offset === SSI_SSIENR) {
      this.rx.length = 0
      if (!this.forced) this.chip.end()
    }
    this.regs.set(offset, value >>> 0)
  }

  writeUint32Atomic(offset: number, value: number, atomicType: number): void {
    // a plain write must not read first: reading DR0 pops the RX FIFO
    this.writeUint32(offset, atomicType ? atomic(this.readUint32(offset), value, atomicType) : value)
  }
}

const SS_CTRL = 0x0c

/** IO_QSPI: only the chip select's output override matters to the flash. */
class IoQspiPeripheral {
  private readonly regs = new Map<number, number>()
  constructor(
    private readonly chip: FlashChip,
    private readonly ssi: SsiPeripheral,
  ) {}
  readUint32(offset: number): number {
    return this.regs.get(offset) ?? 0
  }
  writeUint32(offset: number, value: number): void {
    this.regs.set(offset, value >>> 0)
    if (offset !== SS_CTRL) return
    const outover = (value >> 8) & 3
    if (outover === 2) {
      if (!this.ssi.forced) this.chip.begin()
      this.ssi.forced = true
    } else if (this.ssi.forced) {
      this.ssi.forced = false
      this.chip.end()
    }
  }
  writeUint32Atomic(offset: number, value: number, atomicType: number): void {
    // a plain write must not read first: reading DR0 pops the RX FIFO
    this.writeUint32(offset, atomicType ? atomic(this.readUint32(offset), value, atomicType) : value)
  }
}

function atomic(current: number, value: number, type: number): number {
  // RP2040 register aliases: +0x1000 XOR, +0x2000 set, +0x3000 clear (datasheet 2.1.2)
  if (type === 1) return current ^ value
  if (type === 2) return current | value
  if (type === 3) return current & ~value
  return value
}

/** Puts the flash chip model in place of rp2040js's SSI stub and the missing IO_QSPI block. */
export function attachFlash(rp2040: RP2040, chip: FlashChip): void {
  const ssi = new SsiPeripheral(chip)
  rp2040.peripherals[0x18000] = ssi // XIP_SSI_BASE 0x18000000
  rp2040.peripherals[0x40018] = new IoQspiPeripheral(chip, ssi) // IO_QSPI_BASE 0x40018000
}
