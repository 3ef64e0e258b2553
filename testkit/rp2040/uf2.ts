// UF2 images (https://github.com/microsoft/uf2): 512-byte blocks, each carrying up to 476 bytes
// for a target address. RP2040 images address flash through XIP (0x10000000).

const MAGIC_START0 = 0x0a324655
const MAGIC_START1 = 0x9e5d5157
const MAGIC_END = 0x0ab16f30
const FLAG_NOT_MAIN_FLASH = 0x00000001
export const XIP_BASE = 0x10000000

/** Writes a UF2 image's blocks into a flash array (index 0 = XIP_BASE); returns the bytes written. */
export function loadUf2(uf2: Uint8Array, flash: Uint8Array): number {
  const view = new DataView(uf2.buffer, uf2.byteOffset, uf2.byteLength)
  let written = 0
  for (let at = 0; at + 512 <= uf2.length; at += 512) {
    if (view.getUint32(at, true) !== MAGIC_START0 || view.getUint32(at + 4, true) !== MAGIC_START1) continue
    if (view.getUint32(at + 508, true) !== MAGIC_END) throw new Error(`UF2 block at ${at}: bad end magic`)
    if (view.getUint32(at + 8, true) & FLAG_NOT_MAIN_FLASH) continue
    const addr = view.getUint32(at + 12, true)
    const size = view.getUint32(at + 16, true)
    const offset = addr - XIP_BASE
    if (size > 476 || offset < 0 || offset + size > flash.length)
      throw new Error(`UF2 block at ${at}: 0x${addr.toString(16)}+${size} is outside the flash`)
    flash.set(uf2.subarray(at + 32, at + 32 + size), offset)
    written += size
  }
  if (!written) throw new Error("not a UF2 image (no blocks for main flash)")
  return written
}
