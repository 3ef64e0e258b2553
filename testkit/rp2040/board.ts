// An emulated RP2040 board running the real DeviceScript runtime: boot ROM + UF2 image in flash,
// run in emulated time (rp2040js 1.4.1), with the flash chip, USB link, pins, ADC and I2C devices
// a test needs. Measured here (2 cores shared with other work, load 5–24): 7.6–19.6 M
// instructions/s, so one emulated second cost 3.7–9.4 s of real time; the citymeter_picow program
// starts 1.31 s (emulated) after reset, its board drivers at 2.19 s.

import { readFileSync } from "node:fs"
import { join } from "node:path"
import { ConsoleLogger, LogLevel, Simulator, type RP2040 } from "rp2040js"
import { paths } from "../../sim/src/paths.js"
import { FlashChip, attachFlash, type FlashOp } from "./flash.js"
import { i2cBuses, type I2cBus } from "./i2c.js"
import { AdcDriver, PinDriver } from "./io.js"
import { UsbLink } from "./usb.js"
import { loadUf2 } from "./uf2.js"

export const BOOTROM_FILE = join(paths.root, "vendor/rp2040-bootrom/bootrom-b1.bin")
/** The plain Pico runtime (no CYW43): the one that runs in the emulator. */
export const PICO_RUNTIME_UF2 = join(paths.root, "vendor/rp2040-runtime/devicescript-rp2040.uf2")
export const FLASH_BYTES = 2 * 1024 * 1024
/** The settings/program store (devicescript-pico `boards/rp2040/arch.json`, `devsmgr.c`): 32 × 4 KB. */
export const SETTINGS_STORE = { address: 0x100e0000, pages: 32, pageBytes: 4096 } as const
export const BOARD_CONFIG_ADDRESS = 0x100dc000

export type PowerCut = { instructions: number } | { afterFlashOps: number; withinOp?: number }

export interface BoardOptions {
  /** A UF2 file or its bytes (runtime, or runtime + program from a bundle). */
  uf2?: string | Uint8Array
  /** A whole flash image instead (a board's `flashImage()` after a power cut). */
  flash?: Uint8Array
  /** The flash chip's 8-byte unique id (the runtime's device id derives from it). Default: from `seed`. */
  uniqueId?: Uint8Array
  /** Makes the default unique id; boards with different seeds have different ids. Default 1. */
  seed?: number
  /** Print each log line with this prefix (or not at all: undefined). */
  echoLog?: string
}

export class Board {
  readonly rp2040: RP2040
  private readonly sim: Simulator
  readonly chip: FlashChip
  readonly usb: UsbLink
  readonly pins: PinDriver
  readonly adc: AdcDriver
  /** I2C0 (citymeter_picow: SDA GP4, SCL GP5) and I2C1. */
  readonly i2c: [I2cBus, I2cBus]
  instructions = 0
  cycles = 0
  /** Real milliseconds spent stepping the CPU. */
  realMs = 0
  /** True after a power cut: the CPU runs no more. */
  halted = false
  /** Emulated ms at which the RP2040 watchdog expired (the chip resets: the CPU runs no more). */
  watchdogResetAtMs?: number
  /**
   * Emulated ms at which the program asked for a system reset (AIRCR.SYSRESETREQ, the runtime's
   * `target_reset()`): the chip resets, so the CPU runs no more; boot a new Board from `flashImage()`.
   */
  systemResetAtMs?: number
  private cutAtInstruction = Infinity
  private readonly watchdog: WatchdogBlock

  constructor(o: BoardOptions = {}) {
    // a Simulator only for its SimulationClock (not exported by itself); its execute() is not used
    this.sim = new Simulator()
    const rp = this.sim.rp2040
    this.rp2040 = rp
    rp.logger = new ConsoleLogger(LogLevel.Error)
    const rom = readFileSync(BOOTROM_FILE)
    rp.loadBootrom(new Uint32Array(rom.buffer, rom.byteOffset, rom.byteLength / 4))
    if (o.flash) rp.flash.set(o.flash.subarray(0, rp.flash.length))
    else loadUf2(typeof o.uf2 === "string" ? readFileSync(o.uf2) : (o.uf2 ?? readFileSync(PICO_RUNTIME_UF2)), rp.flash)
    const now = () => this.emulatedMs
    this.chip = new FlashChip(rp.flash, o.uniqueId ?? uniqueIdFor(o.seed ?? 1), now)
    attachFlash(rp, this.chip)
    attachChipReset(rp)
    this.watchdog = detachWatchdogAlarm(rp)
    attachSystemReset(rp, () => {
      this.systemResetAtMs ??= this.emulatedMs
      this.cutPower()
    })
    this.chip.onPowerCut = () => this.cutPower()
    this.usb = new UsbLink(rp, now, o.echoLog === undefined ? undefined : (l) => console.log(o.echoLog + l))
    this.pins = new PinDriver(rp)
    this.adc = new AdcDriver(rp)
    this.i2c = i2cBuses(rp, now)
    // Start at boot2 (the first 256 bytes of flash), as rp2040js's own demo does: the boot ROM's
    // own flash boot path stops in the ROM here (PC 0x2150, waiting). The ROM stays mapped for the
    // functions the SDK calls (flash, memcpy, float). rp.reset() would erase the flash just loaded.
    rp.core.PC = 0x10000000
  }

  /** Emulated time since reset, ms. */
  get emulatedMs(): number {
    return this.rp2040.clock.nanos / 1e6
  }

  get flashOps(): readonly FlashOp[] {
    return this.chip.ops
  }

  /** Program/erase operations that touched [address, address + length). */
  flashOpsIn(address: number, length: number): FlashOp[] {
    return this.chip.ops.filter((op) => op.address < address + length && op.address + op.length > address)
  }

  /** A copy of the whole flash as the CPU sees it now (for a fresh boot after a power cut). */
  flashImage(): Uint8Array {
    return this.rp2040.flash.slice()
  }

  /**
   * Cuts the power at an exact instruction count, or during the (n+1)-th flash program/erase
   * (`afterFlashOps: n`, `withinOp`: the fraction of it done, default 0.5): a page program keeps
   * only that prefix of its bytes, an erase leaves only that prefix of the sector at 0xff.
   */
  cutPowerAt(cut: PowerCut): void {
    if ("instructions" in cut) this.cutAtInstruction = cut.instructions
    else {
      const fraction = cut.withinOp ?? 0.5
      this.chip.cutHook = (op) => (op.index === cut.afterFlashOps ? fraction : undefined)
    }
  }

  /** Stops the CPU now, as a power cut (the flash keeps what it has). */
  cutPower(): void {
    this.halted = true
  }

  /** Runs for `ms` of emulated time (less if the power is cut). */
  async runFor(ms: number): Promise<void> {
    const end = this.rp2040.clock.nanos + ms * 1e6
    await this.run(() => this.rp2040.clock.nanos >= end)
  }

  /**
   * Runs until `predicate()` holds (checked about every 0.1 ms of emulated time) or `maxMs` of
   * emulated time pass; resolves with whether it held.
   */
  async runUntil(predicate: () => boolean, maxMs: number): Promise<boolean> {
    const end = this.rp2040.clock.nanos + maxMs * 1e6
    let held = false
    await this.run(() => (held = predicate()) || this.rp2040.clock.nanos >= end)
    return held
  }

  /**
   * Runs until `p` settles (e.g. `pins.pulses(..)`, which settles only as emulated time passes) or
   * `maxMs` of emulated time pass; throws in the latter case.
   */
  async runUntilSettled<T>(p: Promise<T>, maxMs: number): Promise<T> {
    let settled = false
    const watched = p.finally(() => (settled = true))
    await this.runUntil(() => settled, maxMs)
    if (!settled) throw new Error(`not settled within ${maxMs} ms emulated (at ${this.emulatedMs.toFixed(0)} ms)`)
    return watched
  }

  /** Runs until a log line matches; returns it (or throws after `maxMs` of emulated time). */
  async waitForLog(re: RegExp, maxMs: number): Promise<string> {
    let hit: string | undefined = this.usb.log.find((l) => re.test(l))
    if (hit) return hit
    const off = this.usb.onLine((l) => {
      if (!hit && re.test(l)) hit = l
    })
    try {
      await this.runUntil(() => hit !== undefined, maxMs)
    } finally {
      off()
    }
    if (hit === undefined)
      throw new Error(`no log line matched ${re} within ${maxMs} ms emulated (at ${this.emulatedMs.toFixed(0)} ms)`)
    return hit
  }

  /** The runtime's log so far. */
  get log(): readonly string[] {
    return this.usb.log
  }

  /** Emulator speed so far: instructions per real second and real seconds per emulated second. */
  speed(): { instructionsPerS: number; realSPerEmulatedS: number; emulatedMs: number; instructions: number } {
    const realS = this.realMs / 1000
    return {
      instructionsPerS: realS > 0 ? this.instructions / realS : 0,
      realSPerEmulatedS: this.emulatedMs > 0 ? realS / (this.emulatedMs / 1000) : 0,
      emulatedMs: this.emulatedMs,
      instructions: this.instructions,
    }
  }

  /** The step loop: chunks of instructions, yielding to Node's event loop every ~20 ms of real time. */
  private async run(done: () => boolean): Promise<void> {
    const rp = this.rp2040
    const { core } = rp
    const clock = this.sim.clock
    let sliceStart = performance.now()
    while (!this.halted && !done()) {
      // ~0.1 ms of emulated time per chunk: predicates and cuts are checked at that grain
      const chunkEnd = Math.min(this.instructions + 12_500, this.cutAtInstruction)
      const nsPerCycle = 1e9 / rp.clkSys
      while (this.instructions < chunkEnd && !this.halted) {
        if (core.waiting) {
          const wait = clock.nanosToNextAlarm
          clock.tick(wait > 0 ? wait : nsPerCycle)
          this.cycles += Math.max(1, Math.round(wait / nsPerCycle))
          if (done()) break
        } else {
          const cycles = core.executeInstruction()
          this.instructions++
          this.cycles += cycles
          clock.tick(cycles * nsPerCycle)
        }
      }
      if (this.instructions >= this.cutAtInstruction) this.cutPower()
      if (watchdogExpired(this.watchdog)) {
        this.watchdogResetAtMs = this.emulatedMs
        this.cutPower()
      }
      const t = performance.now()
      if (t - sliceStart > 20) {
        this.realMs += t - sliceStart
        await new Promise((r) => setImmediate(r))
        sliceStart = performance.now()
      }
    }
    this.realMs += performance.now() - sliceStart
  }
}

/**
 * The emulator's speed on this run, one line for a test's output (a measurement, not an
 * assertion): instructions per real second, real seconds per emulated second.
 */
export function speedLine(board: Board): string {
  const s = board.speed()
  return (
    `${(s.instructions / 1e6).toFixed(1)} M instructions in ${(s.emulatedMs / 1000).toFixed(2)} s emulated, ` +
    `${(s.instructionsPerS / 1e6).toFixed(1)} M instructions/s, ${s.realSPerEmulatedS.toFixed(2)} s real per emulated s`
  )
}

/** An 8-byte flash unique id made from a seed (distinct seeds, distinct ids). */
export function uniqueIdFor(seed: number): Uint8Array {
  const id = new Uint8Array(8)
  let x = (seed * 0x9e3779b1) >>> 0 || 1
  for (let i = 0; i < 8; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    id[i] = x & 0xff
  }
  return id
}

/**
 * VREG_AND_CHIP_RESET (0x40064000) is unimplemented in rp2040js 1.4.1 and reads 0xffffffff: the
 * boot ROM then sees CHIP_RESET.PSM_RESTART_FLAG (bit 24) and waits for a debugger instead of
 * booting from flash. A register block that reads as after a power-on reset (0 here) boots.
 */
function attachChipReset(rp: RP2040) {
  const regs = new Map<number, number>()
  rp.peripherals[0x40064] = {
    readUint32: (offset) => regs.get(offset) ?? 0,
    writeUint32: (offset, value) => void regs.set(offset, value >>> 0),
    writeUint32Atomic: (offset, value) => void regs.set(offset, value >>> 0),
  }
}

/**
 * rp2040js 1.4.1 ignores writes to AIRCR (0xe000ed0c), so a system reset request (CMSIS
 * `NVIC_SystemReset()`: VECTKEY 0x05fa in the top half, SYSRESETREQ bit 2; devicescript-pico
 * `src/platform.c` target_reset) left the CPU spinning in the loop after it, deaf to USB. The
 * board now records the request and stops, as a reset would stop this boot.
 */
function attachSystemReset(rp: RP2040, onReset: () => void) {
  const ppb = rp.ppb
  const write = ppb.writeUint32.bind(ppb)
  ppb.writeUint32 = (offset: number, value: number) => {
    if (offset === 0xd0c && value >>> 16 === 0x05fa && value & 4) onReset()
    write(offset, value)
  }
}

/** rp2040js's watchdog block (RPWatchdog at 0x40058000): the parts the board uses. */
interface WatchdogBlock {
  enable: boolean
  reason: number
  timer: { enable: boolean; counter: number }
  alarm: { enable: boolean; target: number }
}

/**
 * rp2040js 1.4.1's watchdog counts down in emulated time (twice per microsecond, erratum RP2040-E1),
 * but its alarm at 0 re-arms itself at the same instant and the emulator spins for ever. The alarm
 * is replaced by one that does nothing, and the step loop looks at the counter instead.
 */
function detachWatchdogAlarm(rp: RP2040): WatchdogBlock {
  const wd = rp.findPeripheral(0x40058000) as unknown as WatchdogBlock
  wd.alarm.enable = false
  wd.alarm = { enable: false, target: 0 }
  return wd
}

/** The count reached 0 (it then wraps past the 24-bit LOAD range). */
function watchdogExpired(wd: WatchdogBlock): boolean {
  if (!wd.enable || !wd.timer.enable) return false
  const c = wd.timer.counter
  return c === 0 || c > 0xffffff
}
