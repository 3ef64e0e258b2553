// Power cuts at any point of the settings store's flash writes, without re-running the firmware up
// to each one: one recorded run keeps the store as it was before every program/erase, and a cut
// inside operation k is that picture plus the part of operation k done before the power failed
// (a page program keeps a prefix of its bytes, an erase a prefix of its sector at 0xff: the
// FlashChip model's rule). Whatever the CPU would have done after the cut does not matter: the
// power is gone. Booting such an image on a fresh board is the reboot after the outage.
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { paths } from "../../sim/src/paths.js"
import { provision } from "../../cli/provision.js"
import { Board, FLASH_BYTES, SETTINGS_STORE, speedLine, uniqueIdFor } from "./board.js"
import { bundledImage } from "./bundle.js"
import type { FlashOp } from "./flash.js"
import { loadUf2, XIP_BASE } from "./uf2.js"
import { readFstor, type FstorBank } from "../fstor.js"

/** The plain Pico runtime without our patches (vendor/rp2040-runtime/PROVENANCE.md). */
export const UPSTREAM_RUNTIME_UF2 = join(paths.root, "vendor/rp2040-runtime/devicescript-rp2040-upstream.uf2")

const STORE_OFFSET = SETTINGS_STORE.address - XIP_BASE
const STORE_BYTES = SETTINGS_STORE.pages * SETTINGS_STORE.pageBytes
/** The board configuration (0x100dc000) and the store follow the runtime's code in flash. */
const RUNTIME_END = 0x100dc000 - XIP_BASE

export interface StoreRecording {
  /** The whole flash when recording began. */
  readonly base: Uint8Array
  /** The store's program/erase operations, in order. */
  readonly ops: FlashOp[]
  /** The store region just before each of `ops`, and (last) as it is now. */
  readonly stores: Uint8Array[]
}

const inStore = (op: FlashOp) =>
  op.address >= SETTINGS_STORE.address && op.address < SETTINGS_STORE.address + STORE_BYTES

/** Records every store write the board makes from now on; call `finish()` when the run is over. */
export function recordStoreWrites(board: Board): { recording: StoreRecording; finish: () => void } {
  const flash = board.rp2040.flash
  const recording: StoreRecording = { base: flash.slice(), ops: [], stores: [] }
  const previous = board.chip.cutHook
  board.chip.cutHook = (op) => {
    if (inStore(op)) {
      recording.ops.push(op)
      recording.stores.push(flash.slice(STORE_OFFSET, STORE_OFFSET + STORE_BYTES))
    }
    return previous?.(op)
  }
  return {
    recording,
    finish: () => {
      board.chip.cutHook = previous
      recording.stores.push(flash.slice(STORE_OFFSET, STORE_OFFSET + STORE_BYTES))
    },
  }
}

/** The first value program of a recording whose entry program follows it: a setting's two writes. */
export function firstValueThenEntry(rec: StoreRecording): number {
  for (let k = 0; k + 1 < rec.ops.length; k++) {
    const [value, entry] = [rec.ops[k], rec.ops[k + 1]]
    // values grow down from the bank's end, entries up from its start
    if (value.kind === "program" && entry.kind === "program" && entry.address < value.address) return k
  }
  throw new Error("no value-then-entry write pair recorded")
}

/** The store region after a power cut that struck operation `k` with `fraction` of it done. */
export function storeAfterCut(rec: StoreRecording, k: number, fraction: number): Uint8Array {
  if (k < 0 || k >= rec.ops.length) throw new Error(`no store operation ${k} (recorded ${rec.ops.length})`)
  const before = rec.stores[k]
  const after = rec.stores[k + 1]
  const op = rec.ops[k]
  const store = before.slice()
  const at = op.address - SETTINGS_STORE.address
  const done = Math.max(0, Math.min(op.length, Math.floor(op.length * fraction)))
  if (op.kind === "program") store.set(after.subarray(at, at + done), at)
  else store.fill(0xff, at, at + done)
  return store
}

/**
 * A whole flash image: the recording's base with `store` in the store region; with `runtimeUf2`,
 * the runtime's code replaced by that image's (the same program and settings on another runtime).
 */
export function flashWithStore(rec: StoreRecording, store: Uint8Array, runtimeUf2?: string): Uint8Array {
  const image = runtimeUf2 ? withRuntime(rec.base, runtimeUf2) : rec.base.slice()
  image.set(store, STORE_OFFSET)
  return image
}

/** A copy of a flash image with the runtime's code taken from another runtime image (UF2). */
export function withRuntime(flash: Uint8Array, runtimeUf2: string): Uint8Array {
  const image = flash.slice()
  const other = new Uint8Array(FLASH_BYTES).fill(0xff)
  loadUf2(readFileSync(runtimeUf2), other)
  image.set(other.subarray(0, RUNTIME_END), 0)
  return image
}

/** The mounted bank of a store region (jd_fstor.c's layout), or undefined when there is none. */
export function mountedStore(store: Uint8Array): FstorBank | undefined {
  return readFstor(store, STORE_BYTES)
}

/** The store region of a board's flash now. */
export function storeOf(board: Board): Uint8Array {
  return board.rp2040.flash.slice(STORE_OFFSET, STORE_OFFSET + STORE_BYTES)
}

/**
 * Every live record of `store` as key → value (hex); a large record (the program, `*prog`) by its
 * entry's place and size, since its bytes live in the data pages that no setting write touches.
 */
export function storeRecords(store: Uint8Array): Map<string, string> {
  const bank = mountedStore(store)
  const out = new Map<string, string>()
  if (!bank) return out
  for (const [key, e] of bank.live)
    out.set(
      key,
      key.startsWith("*")
        ? `large@${e.offset}+${e.size}`
        : Buffer.from(store.subarray(e.offset, e.offset + e.size)).toString("hex"),
    )
  return out
}

/** Deterministic pseudo-random numbers in [0, 1), so a failing cut can be replayed. */
export { seededRandom } from "../../sim/src/random.js"

/** Emulated ms from reset to the meter program's first lines (the runtime waits 1.1 s: devsmgr.c). */
export const PROGRAM_START_MS = 4000

export interface MeterRun {
  rec: StoreRecording
  /** The flash chip's unique id: a reboot is the same chip. */
  chip: Uint8Array
  /** The program's sha256 (the runtime logs `DevS-SHA256: <sha>` for the program it runs). */
  sha256: string
  meterId: string
  /** The meter's line naming its sealing key's id: the same key after a reboot prints the same. */
  keyLine: string
  speed: string
}

/**
 * Runs a provisioned, sealed citymeter_picow meter (a frame every 2 s, no network: every frame
 * stays queued in flash) from its first boot through `frames` frames, recording every store write.
 */
export async function recordSealedMeter(meterId: string, frames = 3): Promise<MeterRun> {
  const settingsDir = mkdtempSync(join(tmpdir(), "citymeter-power-cut-"))
  try {
    provision(
      { meterId, board: "citymeter_picow", broker: "mqtt://10.0.0.1:1883", intervalS: 2, batch: 1 },
      settingsDir,
    )
    const image = await bundledImage("citymeter_picow", { settings: settingsDir })
    const chip = uniqueIdFor(2040)
    const board = new Board({ uf2: image.uf2, uniqueId: chip })
    const { recording, finish } = recordStoreWrites(board)
    await board.waitForLog(/citymeter: frames sealed/, PROGRAM_START_MS)
    const keyLine = board.log.find((l) => l.includes("citymeter: frames sealed"))!
    await board.waitForLog(new RegExp(`citymeter: frame boot=\\d+ seq=${frames} `), 2000 + frames * 2500)
    await board.runFor(300)
    finish()
    return { rec: recording, chip, sha256: image.sha256, meterId, keyLine, speed: speedLine(board) }
  } finally {
    rmSync(settingsDir, { recursive: true, force: true })
  }
}

/** Boots a fresh board (the same chip) from the recording with `store` in its store region. */
export function bootWithStore(run: MeterRun, store: Uint8Array, runtimeUf2?: string): Board {
  return new Board({ flash: flashWithStore(run.rec, store, runtimeUf2), uniqueId: run.chip })
}
