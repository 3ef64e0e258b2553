// The flash queue filled to the settings bank's limit on the emulated RP2040, with the exact
// citymeter_picow program (issue 20). The emulated board has no Wi-Fi (the CYW43 is not emulated),
// so every frame stays queued in flash: at the shortest cadence settings allow (INTERVAL_S=1,
// BATCH=1) the ring fills, then each new frame drops the oldest. What is checked is what the
// runtime's store holds afterwards (testkit/fstor.ts), not what the firmware says of itself.
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { citymeter } from "../../bridge/src/gen/citymeter.js"
import { SLOT_BYTES, STORAGE } from "../../bridge/src/tunables/storage-budget.js"
import { fstorValue } from "../../testkit/fstor.js"
import { Board, speedLine, uniqueIdFor } from "../../testkit/rp2040/board.js"
import { quickMeterImage } from "../../testkit/rp2040/bundle.js"
import { mountedStore, PROGRAM_START_MS, storeOf } from "../../testkit/rp2040/power-cut.js"

const SLOTS = STORAGE.queueSlots
const STATE_BYTES = STORAGE.slotStateBytes
/** Frames past a full ring: each drops the oldest. */
const OVER = 2
const t0 = Date.now()
let board: Board

beforeAll(async () => {
  // INTERVAL_S=1, BATCH=1: a frame a second, the quickest settings allow
  board = new Board({ uf2: (await quickMeterImage()).uf2, uniqueId: uniqueIdFor(27) })
}, 600_000)

afterAll(() => {
  if (board) console.log(`rp2040-queue-full: ${speedLine(board)}`)
  console.log(`rp2040-queue-full: file wall time ${((Date.now() - t0) / 1000).toFixed(1)} s`)
})

/** (boot, seq) of a slot's frame, after the queue's state in front of it (firmware/queue-slot.ts slotValue). */
function frameOf(slot: Buffer): { boot: number; seq: number } {
  const u = citymeter.v1.Uplink.decode(slot.subarray(STATE_BYTES))
  return { boot: u.boot, seq: u.seq }
}

describe("the flash queue on a board that cannot send", () => {
  test(`the ring holds exactly its ${SLOTS} budgeted slots, none refused; past that the oldest frame is dropped and counted`, async () => {
    const frames = SLOTS + OVER
    await board.waitForLog(/citymeter: frames open/, PROGRAM_START_MS)
    await board.waitForLog(new RegExp(`citymeter: frame boot=\\d+ seq=${frames} `), 4000 + frames * 1300)
    await board.runFor(200)
    const log = board.log.join("\n")
    expect(log).toContain("Networking not supported")
    // every write came back from flash, full or not (a refusal would be logged and counted)
    expect(log).not.toMatch(/flash store refused/)
    const drops = board.log.filter((l) => /citymeter: queue full, dropped the oldest frame/.test(l))
    expect(drops.length).toBe(OVER)
    expect(drops[OVER - 1]).toContain(`(${OVER} so far)`)

    const store = storeOf(board)
    const bank = mountedStore(store)!
    const slotKeys = [...bank.live.keys()].filter((k) => /^:q\d+$/.test(k)).sort()
    expect(slotKeys).toEqual(Array.from({ length: SLOTS }, (_, i) => `:q${i}`).sort())
    // no state record: the queue's state rides in the slots
    expect(bank.live.has(":st")).toBe(false)
    const slots = slotKeys.map((k) => fstorValue(store, bank, k)!)
    for (const s of slots) expect(s.length).toBeLessThanOrEqual(SLOT_BYTES)
    // the newest frames, one each: the first OVER were dropped
    const ids = slots.map(frameOf)
    const boot = ids[0].boot
    expect(ids.every((f) => f.boot === boot)).toBe(true)
    expect(ids.map((f) => f.seq).sort((a, b) => a - b)).toEqual(Array.from({ length: SLOTS }, (_, i) => OVER + 1 + i))
    // the newest slot's state: a full ring from the head, and the drops counted
    const newest = slots[ids.findIndex((f) => f.seq === frames)]
    expect(newest[0] & 0x1f).toBe(SLOTS)
    expect(newest.readUIntLE(2, 3)).toBe(OVER)
    console.log(
      `rp2040-queue-full: ${slotKeys.length} slots, ${bank.freeBytes} B free after ${frames} frames, ${drops.length} dropped`,
    )
  }, 900_000)
})
