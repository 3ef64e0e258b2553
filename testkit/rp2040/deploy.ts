// Deploying a bytecode image to the emulated board the way a Jacdac host does: through the
// runtime's DeviceScript Manager service over the USB link, which reaches the same deploy code as
// the WSSK commands 0x94/0x95/0x96 (devicescript runtime/devicescript/devsmgr.c:
// devsmgr_deploy_start, devsmgr_deploy_write, then the finishing write on close).
//
// What the runtime expects (devicescript `devsmgr.c`, jacdac-c `source/jd_ipipe.c`,
// `inc/jd_protocol.h`, `source/jd_services.c`; jacdac spec `services/devicescriptmanager.md`):
// - command deploy_bytecode (0x80) with the u32 size, a multiple of 32: the runtime stops the
//   program, erases room for "*prog" in the settings store (where the old program was, when it is
//   the only large entry), writes the header's first word and the size, opens an input pipe and
//   reports the u16 port in a report with the same command. A size it refuses gets no answer;
// - pipe packets: commands to the runtime's device at service index 0x3e, command = port << 7 |
//   counter (5 bits), counter from 0; a packet whose counter is not the next one is ignored;
//   0x20 closes the pipe, 0x40 marks metadata. Each payload must be a multiple of 32 bytes and at
//   most 236 (a frame's payload): 224 is the largest;
// - a command frame with the ACK_REQUESTED flag (0x02) is acknowledged before it is handled, by a
//   report at service index 0x3f whose command is the frame's crc: the host sends a chunk, waits
//   for its ack, then sends the next (one packet in flight, as jacdac-ts's OutPipe does);
// - closing the pipe (an empty packet with 0x20) finishes: with every byte written the runtime
//   writes the header's second magic and FNV-1a hash ("program written"), and restarts the
//   program at once; a short program logs "! missing N bytes" and stays invalid.
// Registers: program_size 0x180 (u32), program_hash 0x181 (u32, FNV-1a of the image as written at
// close: see rp2040DeployedHash), program_sha256 0x182 (32 bytes; zeros with no valid program).

import type { Board } from "./board.js"
import { readRegister, readU32, type JdService } from "./jacdac.js"
import { FLAG_COMMAND, buildFrame, type JdPacket } from "./usb.js"

/** jacdac spec `services/devicescriptmanager.md`: identifier 0x1134ea2b. */
export const DEVICE_SCRIPT_MANAGER = 0x1134ea2b
export const CMD_DEPLOY_BYTECODE = 0x80
export const REG_PROGRAM_SIZE = 0x180
export const REG_PROGRAM_HASH = 0x181
export const REG_PROGRAM_SHA256 = 0x182
/** jacdac-c `inc/jd_protocol.h`. */
export const SERVICE_INDEX_PIPE = 0x3e
export const SERVICE_INDEX_CRC_ACK = 0x3f
export const FLAG_ACK_REQUESTED = 0x02
export const PIPE_PORT_SHIFT = 7
export const PIPE_COUNTER_MASK = 0x1f
export const PIPE_CLOSE = 0x20
/** The largest pipe payload devsmgr takes: a multiple of 32 within a frame's 236 bytes. */
export const DEPLOY_CHUNK_BYTES = 224

export interface DeployOptions {
  /** Bytes per pipe packet: a multiple of 32, at most 224. */
  chunkBytes?: number
  /**
   * Emulated ms to wait for each pipe packet's ack before sending it again. Default 200. The
   * deploy command is sent once (each one erases and opens a new pipe) and waited for 5 × as long.
   */
  answerMs?: number
  /** Sends of one packet before giving up. Default 4. */
  tries?: number
  /**
   * Called after each chunk is acknowledged (index from 0, bytes sent so far); `false` stops the
   * deploy there, the pipe left open (a power cut mid-deploy: cut it in here, or after).
   */
  afterChunk?: (index: number, sent: number) => boolean | void
}

export interface DeployResult {
  /** The image's size. */
  bytes: number
  /** Bytes streamed (all of them unless `afterChunk` stopped it). */
  sent: number
  /** Pipe packets acknowledged, the closing one not counted. */
  chunks: number
  port: number
  /** The pipe was closed (every byte sent). */
  closed: boolean
  /** Sends repeated for want of an answer. */
  resends: number
  /** Emulated ms from the deploy command to the last ack. */
  emulatedMs: number
  /** Real ms for the same. */
  realMs: number
}

/** FNV-1a, 32 bits (jacdac-c `jd_hash_fnv1a`): what program_hash reports of a program's bytes. */
export function fnv1a(bytes: Uint8Array): number {
  let h = 0x811c9dc5
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193) >>> 0
  return h
}

/**
 * What program_hash says after a deploy through devsmgr on the RP2040: not the image's FNV-1a.
 * devsmgr_deploy_write computes the hash from flash when the pipe closes, before it syncs, and the
 * Pico's flash_program (devicescript-pico `src/flash.c`) keeps the page being written (256 bytes)
 * in RAM until flash_sync or a write to another page: the image's bytes in its last flash page
 * still read 0xff when they are hashed. The image starts 128 bytes (the devsmgr header) into a
 * 4 KB-aligned "*prog" entry. program_sha256 is computed when read, and is right.
 */
export function rp2040DeployedHash(image: Uint8Array): number {
  const HEADER = 128
  const PAGE = 256
  const lastPage = Math.floor((HEADER + image.length - 1) / PAGE) * PAGE - HEADER
  const seen = Uint8Array.from(image)
  seen.fill(0xff, Math.max(0, lastPage))
  return fnv1a(seen)
}

/**
 * Sends a command frame to `s`'s device and runs the board until `answer` matches a packet from it
 * (sending again every `answerMs` of emulated time, `tries` times in all); returns the packet.
 */
async function exchange(
  board: Board,
  frame: Uint8Array,
  answer: (p: JdPacket) => boolean,
  what: string,
  o: { answerMs: number; tries: number },
): Promise<{ packet: JdPacket; resends: number }> {
  let got: JdPacket | undefined
  const off = board.usb.onPacket((p) => {
    if (!got && answer(p)) got = p
  })
  let sends = 0
  try {
    while (sends < o.tries) {
      board.usb.send(frame)
      sends++
      if (await board.runUntil(() => got !== undefined || board.halted, o.answerMs)) break
    }
  } finally {
    off()
  }
  if (!got)
    throw new Error(
      board.halted
        ? `${what}: the board stopped (power cut) at ${board.emulatedMs.toFixed(0)} ms`
        : `${what}: no answer in ${o.tries} × ${o.answerMs} ms emulated (at ${board.emulatedMs.toFixed(0)} ms)`,
    )
  return { packet: got, resends: sends - 1 }
}

/**
 * Deploys `image` to the DeviceScript Manager `s` (find it with `findService(board,
 * DEVICE_SCRIPT_MANAGER)`): deploy_bytecode with its size, the bytes through the pipe in
 * acknowledged chunks, then the closing packet. The runtime then writes the header and restarts
 * the program (watch the log for `DevS-SHA256: <sha256>`).
 */
export async function deployBytecode(
  board: Board,
  s: JdService,
  image: Uint8Array,
  o: DeployOptions = {},
): Promise<DeployResult> {
  const chunk = o.chunkBytes ?? DEPLOY_CHUNK_BYTES
  const wait = { answerMs: o.answerMs ?? 200, tries: o.tries ?? 4 }
  if (image.length % 32) throw new Error(`image of ${image.length} B: devsmgr takes multiples of 32 bytes only`)
  if (chunk % 32 || chunk <= 0 || chunk > DEPLOY_CHUNK_BYTES) throw new Error(`chunk of ${chunk} B: 32..224, × 32`)
  const device = Buffer.from(s.deviceId, "hex")
  const fromDevice = (p: JdPacket) => p.deviceId === s.deviceId && !(p.flags & FLAG_COMMAND)
  const t0 = { emulated: board.emulatedMs, real: performance.now() }
  let resends = 0

  const size = new Uint8Array(4)
  new DataView(size.buffer).setUint32(0, image.length, true)
  const opened = await exchange(
    board,
    buildFrame(FLAG_COMMAND, device, s.serviceIndex, CMD_DEPLOY_BYTECODE, size),
    (p) =>
      fromDevice(p) && p.serviceIndex === s.serviceIndex && p.command === CMD_DEPLOY_BYTECODE && p.data.length >= 2,
    `deploy_bytecode ${image.length} B`,
    // sent once: each one erases and opens a new pipe (a late answer would name a stale port)
    { answerMs: Math.max(1000, 5 * wait.answerMs), tries: 1 },
  )
  resends += opened.resends
  const port = opened.packet.data[0] | (opened.packet.data[1] << 8)
  if (!port) throw new Error("deploy_bytecode: port 0")

  let counter = 0
  const sendPipe = async (data: Uint8Array, flags: number, what: string) => {
    const command = (port << PIPE_PORT_SHIFT) | flags | (counter & PIPE_COUNTER_MASK)
    const frame = buildFrame(FLAG_COMMAND | FLAG_ACK_REQUESTED, device, SERVICE_INDEX_PIPE, command, data)
    const crc = frame[0] | (frame[1] << 8)
    const r = await exchange(
      board,
      frame,
      (p) => fromDevice(p) && p.serviceIndex === SERVICE_INDEX_CRC_ACK && p.command === crc,
      what,
      wait,
    )
    resends += r.resends
    counter++
  }

  let sent = 0
  let chunks = 0
  let stopped = false
  while (sent < image.length) {
    const data = image.subarray(sent, Math.min(sent + chunk, image.length))
    await sendPipe(data, 0, `chunk ${chunks} (at ${sent} B)`)
    sent += data.length
    chunks++
    if (o.afterChunk?.(chunks - 1, sent) === false) {
      stopped = true
      break
    }
  }
  if (!stopped) await sendPipe(new Uint8Array(0), PIPE_CLOSE, "closing the pipe")
  return {
    bytes: image.length,
    sent,
    chunks,
    port,
    closed: !stopped,
    resends,
    emulatedMs: board.emulatedMs - t0.emulated,
    realMs: performance.now() - t0.real,
  }
}

/** program_sha256 (32 bytes, hex; all zeros when the store holds no valid program). */
export async function programSha256(board: Board, s: JdService): Promise<string> {
  return Buffer.from(await readRegister(board, s, REG_PROGRAM_SHA256)).toString("hex")
}

/** program_hash: FNV-1a of the program as hashed when it was written (0 with none; rp2040DeployedHash). */
export const programHash = (board: Board, s: JdService) => readU32(board, s, REG_PROGRAM_HASH)

/** program_size (0 with none). */
export const programSize = (board: Board, s: JdService) => readU32(board, s, REG_PROGRAM_SIZE)
