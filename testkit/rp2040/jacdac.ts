// Talking Jacdac to the emulated board over its USB link: which device serves which service (from
// announce packets) and register reads. A frame from the USB host reaches the runtime's own devices
// by loopback (jacdac-c `source/interfaces/tx_queue.c`: `jd_send_frame_raw` →
// `jd_rx_frame_received_loopback`); the DeviceScript program's servers are a second device.
//
// Jacdac facts used (jacdac spec, `jacdac/dist/c/control.h` and `jd_protocol.h`): service index 0
// is the control service; its announce report is command 0x0000 with u16 flags, u8 packet count,
// u8 reserved, then one u32 service class per service index from 1. A register get is command
// 0x1000 | register, answered by a report with the same command.

import type { Board } from "./board.js"
import { FLAG_COMMAND, buildFrame, type JdPacket } from "./usb.js"

export const CMD_ANNOUNCE = 0x0000
export const CMD_GET_REGISTER = 0x1000

export interface JdService {
  deviceId: string
  serviceIndex: number
  serviceClass: number
}

/** Services announced so far, by device id (the newest announce of each device). */
export function announcedServices(packets: readonly JdPacket[]): JdService[] {
  const byDevice = new Map<string, JdService[]>()
  for (const p of packets) {
    if (p.serviceIndex !== 0 || p.command !== CMD_ANNOUNCE || p.flags & FLAG_COMMAND || p.data.length < 4) continue
    const view = new DataView(p.data.buffer, p.data.byteOffset, p.data.byteLength)
    const list: JdService[] = []
    for (let at = 4, i = 1; at + 4 <= p.data.length; at += 4, i++)
      list.push({ deviceId: p.deviceId, serviceIndex: i, serviceClass: view.getUint32(at, true) })
    byDevice.set(p.deviceId, list)
  }
  return [...byDevice.values()].flat()
}

/** Waits (in emulated time) until some device announces `serviceClass`. */
export async function findService(board: Board, serviceClass: number, maxMs = 2000): Promise<JdService> {
  let found: JdService | undefined
  await board.runUntil(
    () => (found = announcedServices(board.usb.packets).find((s) => s.serviceClass === serviceClass)) !== undefined,
    maxMs,
  )
  if (!found) throw new Error(`no device announced service class 0x${serviceClass.toString(16)} within ${maxMs} ms`)
  return found
}

/** Reads a register of a service: sends the get, runs until the report comes back; its payload. */
export async function readRegister(board: Board, s: JdService, register: number, maxMs = 500): Promise<Uint8Array> {
  const command = CMD_GET_REGISTER | register
  const from = board.usb.packets.length
  board.usb.send(buildFrame(FLAG_COMMAND, Buffer.from(s.deviceId, "hex"), s.serviceIndex, command))
  let reply: JdPacket | undefined
  const match = (p: JdPacket) =>
    p.deviceId === s.deviceId && p.serviceIndex === s.serviceIndex && p.command === command && !(p.flags & FLAG_COMMAND)
  await board.runUntil(() => (reply = board.usb.packets.slice(from).find(match)) !== undefined, maxMs)
  if (!reply) throw new Error(`no report of register 0x${register.toString(16)} within ${maxMs} ms emulated`)
  return reply.data
}

/** A u32 register (little-endian, as Jacdac encodes numbers). */
export async function readU32(board: Board, s: JdService, register: number, maxMs?: number): Promise<number> {
  const d = await readRegister(board, s, register, maxMs)
  if (d.length < 4) throw new Error(`register 0x${register.toString(16)}: ${d.length} bytes, not a u32`)
  return new DataView(d.buffer, d.byteOffset, 4).getUint32(0, true)
}
