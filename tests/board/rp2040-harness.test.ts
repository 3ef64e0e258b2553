// The emulated board's models on their own (no firmware): the flash chip as pico-sdk drives it,
// power cuts inside a program or erase, the ADE7953's register map, the USB link's framing, the ADC.
import { createHash } from "node:crypto"
import { readFileSync } from "node:fs"
import { describe, expect, test } from "vitest"
import { ADE7953_REG, Ade7953Model, ade7953Width } from "../../testkit/rp2040/ade7953.js"
import { FlashChip, XIP_BASE } from "../../testkit/rp2040/flash.js"
import { BOOTROM_FILE, uniqueIdFor } from "../../testkit/rp2040/board.js"
import { voltsToRaw } from "../../testkit/rp2040/io.js"
import { buildFrame, jdCrc16, parseFrame } from "../../testkit/rp2040/usb.js"

const chip = (size = 1 << 16, id = uniqueIdFor(7)) => {
  let now = 0
  const c = new FlashChip(new Uint8Array(size).fill(0xff), id, () => now)
  return { c, tick: (ms: number) => (now += ms) }
}
/** One chip-select transfer, as flash_do_cmd sends it: bytes out, bytes back. */
const xfer = (c: FlashChip, bytes: number[]) => {
  c.begin()
  const back = bytes.map((b) => c.transfer(b))
  c.end()
  return back
}
const addr = (a: number) => [(a >> 16) & 0xff, (a >> 8) & 0xff, a & 0xff]

describe("flash chip model: the commands pico-sdk's flash.c and the boot ROM issue", () => {
  test("0x4B returns the board's own 8-byte unique id after 4 dummy bytes; boards differ", () => {
    const { c } = chip()
    const back = xfer(c, [0x4b, 0, 0, 0, 0, ...new Array(8).fill(0)])
    expect(back.slice(5)).toEqual([...uniqueIdFor(7)])
    expect([...uniqueIdFor(1)]).not.toEqual([...uniqueIdFor(2)])
  })

  test("page program needs write enable, only clears bits, wraps inside its page; erase sets 0xff", () => {
    const { c } = chip()
    xfer(c, [0x02, ...addr(0x100), 0x00]) // no 0x06 first: ignored
    expect(c.image[0x100]).toBe(0xff)
    xfer(c, [0x06])
    expect(xfer(c, [0x05, 0])[1] & 2).toBe(2) // WEL
    xfer(c, [0x02, ...addr(0x1fe), 0x0f, 0xf0, 0x33])
    expect([c.image[0x1fe], c.image[0x1ff], c.image[0x100]]).toEqual([0x0f, 0xf0, 0x33]) // wrapped to 0x100
    xfer(c, [0x06])
    xfer(c, [0x02, ...addr(0x1fe), 0xf1])
    expect(c.image[0x1fe]).toBe(0x01) // AND, not overwrite
    xfer(c, [0x06])
    xfer(c, [0x20, ...addr(0x0123)]) // sector erase: the 4 KB sector holding the address
    expect(c.image.subarray(0, 4096).every((b) => b === 0xff)).toBe(true)
    expect(c.ops.map((o) => [o.kind, o.address - XIP_BASE, o.length])).toEqual([
      ["program", 0x1fe, 3],
      ["program", 0x1fe, 1],
      ["erase-sector", 0, 4096],
    ])
  })

  test("read data (0x03) returns what the image holds", () => {
    const { c } = chip()
    c.image.set([1, 2, 3], 0x2000)
    expect(xfer(c, [0x03, ...addr(0x2000), 0, 0, 0]).slice(4)).toEqual([1, 2, 3])
  })

  test("a power cut inside a page program keeps only a prefix; inside an erase, a prefix at 0xff", () => {
    const { c } = chip()
    let cuts = 0
    c.onPowerCut = () => cuts++
    c.cutHook = (op) => (op.index === 0 ? 0.25 : op.index === 1 ? 0.5 : undefined)
    xfer(c, [0x06])
    xfer(c, [0x02, ...addr(0x3000), ...new Array(256).fill(0)])
    expect(c.image.subarray(0x3000, 0x3040).every((b) => b === 0)).toBe(true)
    expect(c.image.subarray(0x3040, 0x3100).every((b) => b === 0xff)).toBe(true)
    c.image.fill(0, 0x4000, 0x5000)
    xfer(c, [0x06])
    xfer(c, [0x20, ...addr(0x4000)])
    expect(c.image.subarray(0x4000, 0x4800).every((b) => b === 0xff)).toBe(true)
    expect(c.image.subarray(0x4800, 0x5000).every((b) => b === 0)).toBe(true)
    expect(cuts).toBe(2)
    expect(c.ops.map((o) => o.cutAtFraction)).toEqual([0.25, 0.5])
  })
})

describe("ADE7953 model (data sheet register map)", () => {
  const ade = (o = {}) => {
    let now = 0
    return { m: new Ade7953Model(() => now, o), at: (ms: number) => (now = ms) }
  }
  /** A register read as the driver does it: address write, repeated start, read. */
  const read = (m: Ade7953Model, reg: number) => {
    expect(m.connect()).toBe(true)
    m.write(reg >> 8)
    m.write(reg & 0xff)
    const n = ade7953Width(reg)
    const out = Array.from({ length: n }, () => m.read())
    m.stop()
    return out.reduce((v, b) => v * 256 + b, 0)
  }
  const write = (m: Ade7953Model, reg: number, value: number) => {
    m.connect()
    const n = ade7953Width(reg)
    for (const b of [reg >> 8, reg & 0xff, ...Array.from({ length: n }, (_, i) => (value >> (8 * (n - 1 - i))) & 0xff)])
      m.write(b)
    m.stop()
  }

  test("widths by address block; 0x3xx reads the 0x2xx cell sign-extended", () => {
    expect([0x004, 0x102, 0x21c, 0x31c, 0x702].map(ade7953Width)).toEqual([1, 2, 3, 4, 1])
    const { m } = ade()
    m.set(ADE7953_REG.AWATT, -100)
    expect(read(m, 0x212)).toBe(0x1000000 - 100)
    expect(read(m, 0x312)).toBe(0x100000000 - 100)
    m.set(ADE7953_REG.VRMS, 5_980_000)
    expect(read(m, 0x31c)).toBe(5_980_000)
    expect(read(m, 0x102)).toBe(0x8004) // CONFIG reset value
  })

  test("register 0x120 takes a write only right after 0xAD to 0x0FE", () => {
    const { m } = ade()
    write(m, 0x120, 0x30)
    expect(m.get(0x120)).toBe(0)
    write(m, 0x0fe, 0xad)
    write(m, 0x120, 0x30)
    expect(m.get(0x120)).toBe(0x30)
  })

  test("AENERGYA integrates AWATT in emulated time and clears on read (RSTREAD)", () => {
    const { m, at } = ade()
    m.set(ADE7953_REG.AWATT, 4_862_401) // full scale: ≈206.9 kHz of energy counts
    at(1000)
    expect(read(m, 0x21e)).toBe(206_900)
    expect(read(m, 0x21e)).toBe(0)
  })

  test("absent, or answering only after a time: NACK until then", () => {
    const { m, at } = ade({ answersAfterMs: 500 })
    expect(m.connect()).toBe(false)
    at(500)
    expect(m.connect()).toBe(true)
    expect(ade({ absent: true }).m.connect()).toBe(false)
  })
})

describe("USB link framing and ADC", () => {
  test("a frame's crc is jacdac-c's jd_crc16 and a built frame parses back", () => {
    expect(jdCrc16(new TextEncoder().encode("123456789"))).toBe(0x29b1) // CRC-16/CCITT-FALSE check value
    const f = buildFrame(1, Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]), 3, 0x1101, Uint8Array.from([9, 9]))
    expect(f.length % 4).toBe(0)
    expect(jdCrc16(f.subarray(2))).toBe(f[0] | (f[1] << 8))
    const [p] = parseFrame(f, 0)
    expect(p).toMatchObject({ deviceId: "0102030405060708", serviceIndex: 3, command: 0x1101 })
    expect([...p.data]).toEqual([9, 9])
  })

  test("volts to 12-bit raw with the 3.3 V reference; VSYS 5 V reads above the Pico W threshold (204)", () => {
    expect(voltsToRaw(3.3)).toBe(4095)
    expect(voltsToRaw(1.0)).toBe(1241)
    expect(voltsToRaw(-1)).toBe(0)
    expect(voltsToRaw(5 / 3)).toBeGreaterThanOrEqual(204)
  })
})

test("the committed boot ROM is the one its PROVENANCE.md names (sha256), 16 KB of B1 ROM", () => {
  const rom = readFileSync(BOOTROM_FILE)
  const provenance = readFileSync(BOOTROM_FILE.replace(/bootrom-b1\.bin$/, "PROVENANCE.md"), "utf8")
  expect(rom.length).toBe(16384)
  expect(provenance).toContain(createHash("sha256").update(rom).digest("hex"))
  // word 0 is the initial stack pointer, word 1 the reset vector (Thumb: odd) of the ROM
  expect(rom.readUInt32LE(0)).toBe(0x20041f00)
  expect(rom.readUInt32LE(4) & 1).toBe(1)
})
