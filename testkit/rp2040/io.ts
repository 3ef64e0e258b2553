// What the outside world does to the emulated board's pins, in emulated time: digital levels and
// pulse trains, voltages on the ADC inputs; and the pad registers the firmware left.

import type { RP2040 } from "rp2040js"

/** 12-bit ADC with a 3.3 V reference (ADC_VREF is 3V3 on the Pico / Pico W). */
export const ADC_VREF = 3.3
export const ADC_MAX = 4095

/** Volts at an ADC input → the raw 12-bit code the ADC returns (clamped, rounded). */
export function voltsToRaw(volts: number, vref = ADC_VREF): number {
  return Math.max(0, Math.min(ADC_MAX, Math.round((volts / vref) * ADC_MAX)))
}

/**
 * PADS_BANK0 GPIOn bits (pico-sdk `hardware/regs/pads_bank0.h`): SLEWFAST 0, SCHMITT 1, PDE
 * (pull-down) 2, PUE (pull-up) 3, DRIVE 5:4, IE (input enable) 6, OD (output disable) 7; reset
 * value 0x56 (schmitt, pull-down, 4 mA, input enabled).
 */
export const PAD = { SLEWFAST: 1, SCHMITT: 2, PDE: 4, PUE: 8, IE: 0x40, OD: 0x80, RESET: 0x56 } as const

export interface PadState {
  raw: number
  pullDown: boolean
  pullUp: boolean
  inputEnabled: boolean
  outputDisabled: boolean
}

export interface PulseOptions {
  /** Time the contact is active (closed), ms. */
  widthMs: number
  /** Time from one pulse's start to the next's, ms. */
  periodMs: number
  count: number
  /**
   * Active = low: a contact to ground, open (released: the pin reads its pull-up) between pulses.
   * false: driven high for the pulse, low between. Default true.
   */
  activeLow?: boolean
  /** Delay before the first pulse, ms of emulated time from now. Default 0. */
  startInMs?: number
}

export class PinDriver {
  private readonly pending = new Set<{ cancel(): void }>()
  /** Pins driven from outside; the others follow their pad's pull (a floating input). */
  private readonly driven = new Set<number>()
  /** Pulses whose active edge has been applied, per pin. */
  readonly pulsesDone = new Map<number, number>()

  constructor(private readonly rp2040: RP2040) {
    rp2040.gpio.forEach((pin, i) => {
      // rp2040js starts every pad at 0x36 (`gpio-pin.js`), the chip at 0x56 (PAD.RESET): use the chip's
      pin.padValue = PAD.RESET
      // an input nobody drives reads its pull: a pull-up reads high, a pull-down low
      pin.addListener(() => this.follow(i))
      this.follow(i)
    })
  }

  private follow(pin: number) {
    if (this.driven.has(pin)) return
    const p = this.rp2040.gpio[pin]
    if (p.pullupEnabled !== p.pulldownEnabled) p.setInputValue(p.pullupEnabled)
  }

  /**
   * Drives an input pin's level from outside (a contact, a logic signal); `undefined` releases it
   * (an open contact: the pin then reads its pull).
   */
  setLevel(pin: number, level: boolean | 0 | 1 | undefined): void {
    if (level === undefined) {
      this.driven.delete(pin)
      this.follow(pin)
      return
    }
    this.driven.add(pin)
    this.rp2040.gpio[pin].setInputValue(!!level)
  }

  level(pin: number): boolean {
    return this.rp2040.gpio[pin].inputValue
  }

  /**
   * Schedules a pulse train at exact emulated times (clock alarms): each pulse's active edge at
   * start + i × period, its release widthMs later. Resolves when the last edge has happened, so
   * only as the board runs (`board.runUntilSettled`). Sets the idle level now.
   */
  pulses(pin: number, o: PulseOptions): Promise<void> {
    const activeLow = o.activeLow ?? true
    const clock = this.rp2040.clock
    const idle = activeLow ? undefined : false
    this.setLevel(pin, idle)
    return new Promise((resolve) => {
      if (o.count <= 0) return resolve()
      let i = 0
      let active = false
      const alarm = clock.createAlarm(() => {
        if (!active) {
          this.setLevel(pin, !activeLow)
          this.pulsesDone.set(pin, (this.pulsesDone.get(pin) ?? 0) + 1)
          active = true
          alarm.schedule(o.widthMs * 1e6)
        } else {
          this.setLevel(pin, idle)
          active = false
          if (++i >= o.count) {
            this.pending.delete(alarm)
            return resolve()
          }
          alarm.schedule((o.periodMs - o.widthMs) * 1e6)
        }
      })
      this.pending.add(alarm)
      alarm.schedule((o.startInMs ?? 0) * 1e6)
    })
  }

  /** Calls `f` at an exact emulated time from now. */
  at(delayMs: number, f: () => void): void {
    const alarm = this.rp2040.clock.createAlarm(() => {
      this.pending.delete(alarm)
      f()
    })
    this.pending.add(alarm)
    alarm.schedule(delayMs * 1e6)
  }

  cancelAll(): void {
    for (const a of this.pending) a.cancel()
    this.pending.clear()
  }

  /** The PADS_BANK0 GPIOn register as the firmware left it. */
  pad(pin: number): PadState {
    const raw = this.rp2040.gpio[pin].padValue
    return {
      raw,
      pullDown: !!(raw & PAD.PDE),
      pullUp: !!(raw & PAD.PUE),
      inputEnabled: !!(raw & PAD.IE),
      outputDisabled: !!(raw & PAD.OD),
    }
  }
}

/**
 * The ADC inputs: GPIO26–29 are channels 0–3 (RP2040 datasheet 4.9; rp2040js `adc.js`). GP29
 * reads VSYS/3 on a Pico: devicescript-pico `src/platform.c` decides the board is a Pico W when
 * `adc_read_pin(29)` (the raw code << 4, `src/adc.c`) is under 3264, i.e. raw < 204.
 */
export class AdcDriver {
  constructor(private readonly rp2040: RP2040) {
    this.setVsys(5.0)
  }

  /** Volts at GPIO26–28 (ADC0–2). */
  setVolts(pin: 26 | 27 | 28 | 29, volts: number): void {
    this.rp2040.adc.channelValues[pin - 26] = voltsToRaw(volts)
  }

  setRaw(pin: 26 | 27 | 28 | 29, raw: number): void {
    this.rp2040.adc.channelValues[pin - 26] = Math.max(0, Math.min(ADC_MAX, Math.round(raw)))
  }

  raw(pin: 26 | 27 | 28 | 29): number {
    return this.rp2040.adc.channelValues[pin - 26]
  }

  /** VSYS as the Pico's divider shows it on GP29 (VSYS / 3). 5 V (USB) reads 2068 raw. */
  setVsys(volts: number): void {
    this.setVolts(29, volts / 3)
  }
}
