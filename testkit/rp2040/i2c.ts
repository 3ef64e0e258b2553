// I2C devices on an emulated RP2040 bus, and the fix rp2040js 1.4.1 needs for a NACK.
//
// The fix: after an address NACK, rp2040js's `RPI2C.abort()` flushes the TX FIFO and raises TX_ABRT
// but never TX_EMPTY, while pico-sdk's `i2c_write_blocking_internal` (`hardware_i2c/i2c.c`) waits
// for TX_EMPTY (IC_RAW_INTR_STAT bit 4) after each byte before it looks at the abort source: it
// spins for ever. On the chip an abort empties the FIFO, so TX_EMPTY rises. Patched on the
// instance, from outside (node_modules stays as published).

import { I2CMode, type RP2040, type RPI2C } from "rp2040js"

const R_TX_EMPTY = 1 << 4

/** A device on the bus, called as the controller drives it; all calls are synchronous. */
export interface I2cDevice {
  /** Address phase: true to ACK. */
  connect(mode: "read" | "write"): boolean
  /** A byte written to the device: true to ACK. */
  write(byte: number): boolean
  /** A byte read from the device. */
  read(): number
  /** STOP on the bus. */
  stop(): void
}

/** What went over the bus, for tests: one entry per address phase. */
export interface I2cTransfer {
  address: number
  mode: "read" | "write"
  acked: boolean
  bytes: number[]
  emulatedMs: number
}

export class I2cBus {
  readonly devices = new Map<number, I2cDevice>()
  readonly transfers: I2cTransfer[] = []
  private current?: { device?: I2cDevice; transfer: I2cTransfer }

  constructor(
    readonly controller: RPI2C,
    nowMs: () => number,
  ) {
    fixAbortTxEmpty(controller)
    controller.onConnect = (address, mode) => {
      const m = mode === I2CMode.Read ? "read" : "write"
      const device = this.devices.get(address)
      const acked = device ? device.connect(m) : false
      const transfer: I2cTransfer = { address, mode: m, acked, bytes: [], emulatedMs: nowMs() }
      this.transfers.push(transfer)
      if (this.transfers.length > 10000) this.transfers.splice(0, 5000)
      this.current = { device, transfer }
      controller.completeConnect(acked)
    }
    controller.onWriteByte = (value) => {
      const c = this.current
      const ack = c?.device ? c.device.write(value) : false
      c?.transfer.bytes.push(value)
      controller.completeWrite(ack)
    }
    controller.onReadByte = () => {
      const c = this.current
      const value = c?.device ? c.device.read() & 0xff : 0xff
      c?.transfer.bytes.push(value)
      controller.completeRead(value)
    }
    controller.onStop = () => {
      this.current?.device?.stop()
      this.current = undefined
      controller.completeStop()
    }
  }

  attach(address: number, device: I2cDevice): void {
    this.devices.set(address, device)
  }

  detach(address: number): void {
    this.devices.delete(address)
  }
}

/** Makes an abort raise TX_EMPTY, as the flushed FIFO does on the chip (see the file header). */
export function fixAbortTxEmpty(i2c: RPI2C): void {
  const patched = i2c as unknown as { abort(reason: number): void; setInterrupts(mask: number): void }
  const abort = patched.abort.bind(i2c)
  patched.abort = (reason: number) => {
    abort(reason)
    patched.setInterrupts(R_TX_EMPTY)
  }
}

/** The I2C controllers of a board: I2C0 (the citymeter_picow board's SDA GP4 / SCL GP5) and I2C1. */
export function i2cBuses(rp2040: RP2040, nowMs: () => number): [I2cBus, I2cBus] {
  return [new I2cBus(rp2040.i2c[0], nowMs), new I2cBus(rp2040.i2c[1], nowMs)]
}
