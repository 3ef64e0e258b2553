// The host side of the runtime's USB CDC link: its log (DMESG text) and Jacdac packets.
//
// What the runtime does (devicescript-pico `src/usb.c`, jacdac-c `source/jd_usb.c`):
// - nothing is sent until the host sends a USB-bridge command (`jd_usb_pull` returns 0 while no
//   queue is allocated; `jd_usb_handle_processing_packet` allocates it);
// - Jacdac frames travel quoted: 0xFE 0xFC starts a frame, 0xFE 0xFD ends it, 0xFE 0xF8 is a literal
//   0xFE, 0xFE 0xFB marks frames dropped; every other byte outside a frame is log text. The log
//   flows from 128 << 10 µs after `tud_cdc_connected()` (`jd_usb_proto_process`).
// - the bridge commands are frames with the COMMAND and BROADCAST flags, device_identifier's low
//   32 bits the USB bridge service class 0x18f61a4a, command 0x81 = enable packets, 0x83 = enable
//   log (`jacdac/dist/c/usbbridge.h`); the frame's crc is jacdac-c's `jd_crc16` (`jd_util.c`).

import { USBCDC, type RP2040 } from "rp2040js"

const MAGIC = 0xfe
const LITERAL_MAGIC = 0xf8
const FRAME_START = 0xfc
const FRAME_END = 0xfd
export const USB_BRIDGE_CLASS = 0x18f61a4a
export const CMD_ENABLE_PACKETS = 0x81
export const CMD_ENABLE_LOG = 0x83
/** Jacdac frame flags (jacdac-c `inc/jd_physical.h`). */
export const FLAG_COMMAND = 0x01
export const FLAG_BROADCAST = 0x04

/** One Jacdac packet of a frame. */
export interface JdPacket {
  flags: number
  /** device_identifier as 16 hex digits (little-endian bytes, as Jacdac prints ids). */
  deviceId: string
  serviceIndex: number
  command: number
  data: Uint8Array
  /** Emulated time it arrived, ms since reset. */
  emulatedMs: number
}

/** jacdac-c `jd_crc16`: CRC-16/CCITT-FALSE (poly 0x1021, init 0xffff). */
export function jdCrc16(data: Uint8Array): number {
  let crc = 0xffff
  for (const b of data) {
    let x = ((crc >> 8) ^ b) & 0xff
    x ^= x >> 4
    crc = ((crc << 8) ^ (x << 12) ^ (x << 5) ^ x) & 0xffff
  }
  return crc
}

/** A frame holding one packet: header (crc, size, flags, device id) then the packet, 4-byte padded. */
export function buildFrame(
  flags: number,
  deviceId: Uint8Array,
  serviceIndex: number,
  command: number,
  data: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const pktLen = 4 + data.length
  const size = (pktLen + 3) & ~3
  const f = new Uint8Array(12 + size)
  f[2] = size
  f[3] = flags
  f.set(deviceId, 4)
  f[12] = data.length
  f[13] = serviceIndex
  f[14] = command & 0xff
  f[15] = command >> 8
  f.set(data, 16)
  const crc = jdCrc16(f.subarray(2))
  f[0] = crc & 0xff
  f[1] = crc >> 8
  return f
}

export function parseFrame(frame: Uint8Array, emulatedMs: number): JdPacket[] {
  if (frame.length < 12) return []
  const size = frame[2]
  const end = Math.min(frame.length, 12 + size)
  const deviceId = Buffer.from(frame.subarray(4, 12)).toString("hex")
  const out: JdPacket[] = []
  for (let p = 12; p + 4 <= end;) {
    const n = frame[p]
    out.push({
      flags: frame[3],
      deviceId,
      serviceIndex: frame[p + 1] & 0x3f,
      command: frame[p + 2] | (frame[p + 3] << 8),
      data: frame.slice(p + 4, p + 4 + n),
      emulatedMs,
    })
    p += (4 + n + 3) & ~3
  }
  return out
}

/** Reads the runtime's log and Jacdac packets off the emulated USB CDC port. */
export class UsbLink {
  readonly cdc: USBCDC
  /** Complete log lines, in order. */
  readonly log: string[] = []
  /** Emulated time (ms since reset) each line of `log` arrived. */
  readonly logTimes: number[] = []
  readonly packets: JdPacket[] = []
  connected = false
  private line = ""
  private inFrame = false
  private wasMagic = false
  private frame: number[] = []
  private readonly lineListeners = new Set<(line: string) => void>()
  private readonly packetListeners = new Set<(p: JdPacket) => void>()

  constructor(
    rp2040: RP2040,
    private readonly nowMs: () => number,
    /** Also print each log line (prefixed) to the test's console. */
    private readonly echo?: (line: string) => void,
  ) {
    this.cdc = new USBCDC(rp2040.usbCtrl)
    this.cdc.onDeviceConnected = () => {
      this.connected = true
      this.send(buildFrame(FLAG_COMMAND | FLAG_BROADCAST, classId(USB_BRIDGE_CLASS), 0, CMD_ENABLE_PACKETS))
    }
    this.cdc.onSerialData = (buf) => this.receive(buf)
  }

  /** Quotes a frame and queues it for the device. */
  send(frame: Uint8Array): void {
    const out = [MAGIC, FRAME_START]
    for (const b of frame) out.push(...(b === MAGIC ? [MAGIC, LITERAL_MAGIC] : [b]))
    out.push(MAGIC, FRAME_END)
    for (const b of out) this.cdc.sendSerialByte(b)
  }

  onLine(f: (line: string) => void): () => void {
    this.lineListeners.add(f)
    return () => this.lineListeners.delete(f)
  }

  onPacket(f: (p: JdPacket) => void): () => void {
    this.packetListeners.add(f)
    return () => this.packetListeners.delete(f)
  }

  private receive(buf: Uint8Array) {
    for (let c of buf) {
      if (this.wasMagic) {
        this.wasMagic = false
        if (c === FRAME_START) {
          this.inFrame = true
          this.frame = []
          continue
        }
        if (c === FRAME_END) {
          if (this.inFrame) this.frameDone()
          this.inFrame = false
          continue
        }
        if (c !== LITERAL_MAGIC) continue // frame gap, serial gap, reserved
        c = MAGIC
      } else if (c === MAGIC) {
        this.wasMagic = true
        continue
      }
      if (this.inFrame) this.frame.push(c)
      else this.text(c)
    }
  }

  private frameDone() {
    for (const p of parseFrame(Uint8Array.from(this.frame), this.nowMs())) {
      this.packets.push(p)
      if (this.packets.length > 5000) this.packets.splice(0, 1000)
      for (const f of this.packetListeners) f(p)
    }
  }

  private text(c: number) {
    if (c === 10) {
      const l = this.line.replace(/\r$/, "")
      this.line = ""
      this.log.push(l)
      this.logTimes.push(this.nowMs())
      this.echo?.(l)
      for (const f of this.lineListeners) f(l)
    } else this.line += String.fromCharCode(c)
  }
}

/** A device id whose low 32 bits are a service class (broadcast frames). */
export function classId(serviceClass: number): Uint8Array {
  const id = new Uint8Array(8)
  new DataView(id.buffer).setUint32(0, serviceClass, true)
  return id
}
