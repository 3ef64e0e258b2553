// The frame ledger's blocks as a pure rule (store/ledger-blocks.ts): which slot a frame takes,
// what its digest is, and how rows merge into the blocks already stored. No database.
import { describe, expect, test } from "vitest"
import {
  BLOCK_SEQS,
  DIGEST_BYTES,
  UNKNOWN_DIGEST,
  digestOf,
  mergeBlocks,
  slotHash,
  type LedgerBlock,
  type LedgerRow,
} from "../../bridge/src/store/ledger-blocks.js"

const hex = (byte: string) => byte.repeat(32)
const row = (seq: number, sha256: string | null, minute = seq): LedgerRow => ({
  meterId: "m-1",
  boot: 2,
  seq,
  receivedAt: new Date(Date.UTC(2024, 0, 1, 0, minute)),
  sha256,
})
const slot = (b: LedgerBlock, i: number) => b.hashes.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES)

describe("ledger blocks", () => {
  test("a frame's digest is the first 8 bytes of its SHA-256; without one (or one of zeros) it is 'unknown'", () => {
    expect(digestOf(hex("ab")).toString("hex")).toBe("ab".repeat(8))
    expect(digestOf(hex("AB")).toString("hex")).toBe("ab".repeat(8))
    for (const none of [null, undefined, "", "not hex at all", hex("00")])
      expect(digestOf(none)).toEqual(UNKNOWN_DIGEST)
    expect(slotHash(digestOf(hex("ab")))).toEqual({ held: true, sha256: "ab".repeat(8) })
    expect(slotHash(UNKNOWN_DIGEST)).toEqual({ held: true, sha256: null })
    // a slot of zeros, a slot past the block's end (substring gives fewer bytes), no block: claimable
    for (const free of [Buffer.alloc(8), Buffer.alloc(0), null]) expect(slotHash(free)).toEqual({ held: false })
  })

  test("rows take the slot seq - block × BLOCK_SEQS; gaps stay zero; a block ends at its last frame", () => {
    const { blocks, overlaps } = mergeBlocks(
      [row(BLOCK_SEQS + 3, hex("cc"), 9), row(1, hex("aa"), 5), row(3, null, 2), row(BLOCK_SEQS - 1, hex("bb"), 7)],
      new Map(),
    )
    expect(overlaps).toBe(0)
    expect(blocks.map((b) => [b.block, b.hashes.length / DIGEST_BYTES])).toEqual([
      [1, 4],
      [0, BLOCK_SEQS],
    ])
    const [b1, b0] = blocks
    expect(slot(b0, 1).toString("hex")).toBe("aa".repeat(8))
    expect(slotHash(slot(b0, 2))).toEqual({ held: false })
    expect(slot(b0, 3)).toEqual(UNKNOWN_DIGEST)
    expect(slot(b0, BLOCK_SEQS - 1).toString("hex")).toBe("bb".repeat(8))
    expect(slot(b1, 3).toString("hex")).toBe("cc".repeat(8))
    expect([b0.firstReceivedAt.getUTCMinutes(), b0.lastReceivedAt.getUTCMinutes()]).toEqual([2, 7])
  })

  test("late rows merge into the stored block, which keeps its slots; a slot held already keeps its first digest", () => {
    const stored = mergeBlocks([row(1, hex("aa"), 5), row(2, hex("bb"), 6)], new Map()).blocks[0]
    const before = Buffer.from(stored.hashes)
    const existing = new Map([[`m-1\u00002\u00000`, stored]])
    const { blocks, overlaps } = mergeBlocks([row(5, hex("dd"), 1), row(2, hex("ee"), 30)], existing)
    expect(overlaps).toBe(1)
    const merged = blocks[0]
    expect(merged.hashes.subarray(0, before.length)).toEqual(before)
    expect(slot(merged, 2).toString("hex")).toBe("bb".repeat(8))
    expect(slot(merged, 5).toString("hex")).toBe("dd".repeat(8))
    expect([merged.firstReceivedAt.getUTCMinutes(), merged.lastReceivedAt.getUTCMinutes()]).toEqual([1, 6])
    // the stored block itself is not changed in place
    expect(stored.hashes).toEqual(before)
  })
})
