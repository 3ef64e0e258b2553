// A reader of DeviceScript's settings store (jacdac-c source/jd_fstor.c, DeviceScript 2.16) in a
// flash image, as the simulator's VM saves it: the simulator reads the program record (`*prog`,
// program.ts), tests every record the store holds and every record a firmware writes. The
// layout, from jd_fstor.c:
//   - the store has two banks of `header_pages` pages each at its start (line 22, 211-212); a bank
//     is a 24-byte header (lines 36-48: magic0 0x52545346, magic1 0x6becea0a, generation,
//     page_size, total_pages u16, header_pages u16, reserved) followed by 24-byte entries
//     (lines 28-32: key char[16], offset u32, size u32) growing up, and the values growing down
//     from the bank's end, each aligned to 8 bytes (lines 68-76, 255, 312); the mounted bank is the
//     valid one with the higher generation (lines 217-223);
//   - an entry whose offset is all ones ends the list (line 78-80); a later entry of the same key
//     replaces an earlier one (has_later_copy, lines 139-146); keys starting with '*' are "large"
//     (the program, `*prog`): their data lives in the data pages after both banks, only the entry
//     is in the bank (lines 82-84, 254).
// The settings service stores a program's key with a ':' in front (services/settings.c line 31).

const MAGIC0 = 0x52545346
const MAGIC1 = 0x6becea0a
const HEADER_BYTES = 24
const ENTRY_BYTES = 24
const PAGE_BYTES = 4096

export interface FstorEntry {
  /** The key as stored (a program's settings start with ':'). */
  key: string
  offset: number
  size: number
  /** Bytes this entry takes in its bank: the entry plus its value aligned to 8 (8 when empty). */
  cost: number
}

export interface FstorBank {
  generation: number
  bankBytes: number
  /** Every entry in write order, replaced ones included. */
  entries: FstorEntry[]
  /** The newest entry of each key. */
  live: Map<string, FstorEntry>
  /** What the store lets a write use before it must collect (jd_fstor.c free_space, line 127-132). */
  freeBytes: number
}

/** Value bytes aligned as jd_fstor.c align() does: up to 8, and 8 for an empty value. */
export const alignedValueBytes = (size: number) => (size === 0 ? 8 : Math.ceil(size / 8) * 8)

/** The mounted bank of a flash image, or undefined when the image holds no valid store. */
export function readFstor(image: Uint8Array, totalBytes = 128 * 1024): FstorBank | undefined {
  if (image.length < HEADER_BYTES) return undefined
  const buf = Buffer.alloc(totalBytes, 0xff)
  buf.set(image.subarray(0, Math.min(image.length, totalBytes)))
  const headerPages = Math.max(1, Math.min(0xf0, Math.floor(totalBytes / PAGE_BYTES / 16)))
  const bankBytes = headerPages * PAGE_BYTES
  let best: { at: number; generation: number } | undefined
  for (const at of [0, bankBytes]) {
    if (buf.readUInt32LE(at) !== MAGIC0 || buf.readUInt32LE(at + 4) !== MAGIC1) continue
    if (buf.readUInt32LE(at + 12) !== PAGE_BYTES || buf.readUInt16LE(at + 18) !== headerPages) continue
    const generation = buf.readUInt32LE(at + 8)
    if (!best || generation > best.generation) best = { at, generation }
  }
  if (!best) return undefined
  const entries: FstorEntry[] = []
  let dataStart = best.at + bankBytes
  for (let p = best.at + HEADER_BYTES; p + ENTRY_BYTES <= dataStart; p += ENTRY_BYTES) {
    const offset = buf.readUInt32LE(p + 16)
    if (offset === 0xffffffff) break
    const raw = buf.subarray(p, p + 16)
    const key = raw.subarray(0, raw.indexOf(0) < 0 ? 16 : raw.indexOf(0)).toString("latin1")
    const size = buf.readUInt32LE(p + 20)
    const large = key.startsWith("*")
    if (!large && offset < dataStart) dataStart = offset
    entries.push({ key, offset, size, cost: ENTRY_BYTES + (large ? 0 : alignedValueBytes(size)) })
  }
  const live = new Map<string, FstorEntry>()
  for (const e of entries) live.set(e.key, e)
  const lastEntryEnd = best.at + HEADER_BYTES + entries.length * ENTRY_BYTES
  // free_space(): data_start - last_entry - 2 entries, where last_entry is the newest entry's start
  const freeBytes = Math.max(0, dataStart - (lastEntryEnd - ENTRY_BYTES) - 2 * ENTRY_BYTES)
  return { generation: best.generation, bankBytes, entries, live, freeBytes }
}

/** The value of a live key, or undefined. */
export function fstorValue(image: Uint8Array, bank: FstorBank, key: string): Buffer | undefined {
  const e = bank.live.get(key)
  if (!e) return undefined
  return Buffer.from(image.subarray(e.offset, e.offset + e.size))
}

/**
 * Counts the records a VM writes, from the images it saves: the VM saves its flash after every
 * record (jd_fstor.c flash_sync, line 332) and after a collection's header (line 188). A save
 * that adds one entry to the same bank is one record of that entry's key; a new generation is a
 * collection.
 */
export class FstorWriteCounter {
  /** Records written, by key, since the counter was made or reset. */
  readonly records = new Map<string, number>()
  collections = 0
  private last?: FstorBank

  /** Feed every image the VM saves, in order. */
  saved(image: Uint8Array) {
    const bank = readFstor(image)
    if (!bank) return
    const last = this.last
    this.last = bank
    if (!last) return
    if (bank.generation !== last.generation) {
      this.collections++
      return
    }
    for (const e of bank.entries.slice(last.entries.length)) this.records.set(e.key, (this.records.get(e.key) ?? 0) + 1)
  }

  total(filter: (key: string) => boolean = () => true): number {
    let n = 0
    for (const [k, v] of this.records) if (filter(k)) n += v
    return n
  }

  reset() {
    this.records.clear()
    this.collections = 0
  }
}
