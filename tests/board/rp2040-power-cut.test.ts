// Power cuts during the settings store's flash writes, on the emulated RP2040 with the exact
// citymeter_picow program and a provisioned meter's settings (issue 20).
//
// jacdac-c's store (source/jd_fstor.c) writes a setting as two page programs: the value, then its
// 24-byte entry. Upstream, a cut between the two leaves bytes that are not 0xff after the last
// entry; the next mount fails ("non ff") and formats the store, which erases every setting and the
// program itself: the board comes up with no program. Our runtime image carries a patch
// (vendor/rp2040-runtime/patches/0001-fstor-recover-torn-write.patch) that keeps every whole entry.
//
// One recorded run gives the store before each of its writes (testkit/rp2040/power-cut.ts); each
// trial boots a fresh board from the store as a cut inside one write left it.
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import {
  bootWithStore,
  firstValueThenEntry,
  type MeterRun,
  PROGRAM_START_MS,
  mountedStore,
  recordSealedMeter,
  seededRandom,
  storeAfterCut,
  storeOf,
  storeRecords,
  UPSTREAM_RUNTIME_UF2,
} from "../../testkit/rp2040/power-cut.js"

let run: MeterRun
const meterLine = /citymeter: meter cut-1 boot \d+/
const t0 = Date.now()

beforeAll(async () => {
  run = await recordSealedMeter("cut-1", 3)
  console.log(`rp2040-power-cut: recorded ${run.rec.ops.length} store writes; ${run.speed}`)
}, 600_000)

afterAll(() => console.log(`rp2040-power-cut: file wall time ${((Date.now() - t0) / 1000).toFixed(1)} s`))

describe("the store writes a cut can hit", () => {
  // each record is a window for a cut: a boot writes its counter, a frame its slot alone (the slot
  // carries the queue's state; the two-record layout also rewrote a state record "st" per frame)
  test("a sealed meter's first boot and its frames: one record a boot, one a frame", () => {
    const first = mountedStore(run.rec.stores[0])!
    const last = mountedStore(run.rec.stores[run.rec.stores.length - 1])!
    expect(last.generation).toBe(first.generation) // no collection in between: every entry is still there
    const written = new Map<string, number>()
    for (const e of last.entries.slice(first.entries.length)) written.set(e.key, (written.get(e.key) ?? 0) + 1)
    console.log(`rp2040-power-cut: records written: ${JSON.stringify(Object.fromEntries(written))}`)
    expect(Object.fromEntries(written)).toEqual({ ":BOOT": 1, ":q0": 1, ":q1": 1, ":q2": 1 })
  })
})

describe("a power cut between a setting's value and its entry (the runtime's store, jd_fstor.c)", () => {
  test("upstream runtime: the next boot formats the store and the meter program is gone", async () => {
    const k = firstValueThenEntry(run.rec)
    const board = bootWithStore(run, storeAfterCut(run.rec, k + 1, 0), UPSTREAM_RUNTIME_UF2)
    await board.waitForLog(/fstor: formatting now/, 500)
    // the runtime names the program it found (none: an empty one) and starts no citymeter code
    await board.waitForLog(/DevS-SHA256: /, PROGRAM_START_MS)
    await board.runFor(300)
    const log = board.log.join("\n")
    expect(log).toContain("fstor: mount failure: non ff")
    expect(log).not.toContain(`DevS-SHA256: ${run.sha256}`)
    expect(log).not.toMatch(/citymeter:/)
  }, 300_000)

  test("our runtime: the whole entries are kept, the program starts with the same meter id and key", async () => {
    const k = firstValueThenEntry(run.rec)
    const before = storeRecords(run.rec.stores[k + 1]) // the value is written, its entry is not
    const board = bootWithStore(run, storeAfterCut(run.rec, k + 1, 0))
    await board.waitForLog(/fstor: mounted/, 500)
    expect(board.log.join("\n")).toMatch(/fstor: torn write at the end of gen \d+ \(power cut\?\): recovering/)
    expect(board.log.join("\n")).not.toContain("formatting now")
    // every record survives, before the program writes anything
    expect(storeRecords(storeOf(board))).toEqual(before)
    await board.waitForLog(/citymeter: frames sealed/, PROGRAM_START_MS)
    const log = board.log.join("\n")
    expect(log).toContain(`DevS-SHA256: ${run.sha256}`)
    expect(log).toMatch(meterLine)
    expect(log).toContain(run.keyLine)
  }, 300_000)
})

describe("power cuts at random points of the store's writes (our runtime)", () => {
  // seeded: a failure names its cut, and the same cut replays
  const random = seededRandom(20)
  const trials = Array.from({ length: 8 }, (_, i) => ({ name: `cut ${i}`, i, pick: random(), fraction: random() }))

  test.each(trials)(
    "$name: every record written before the cut is there after the reboot; the program, meter id and key survive",
    async ({ pick, fraction, i }) => {
      const k = Math.floor(pick * run.rec.ops.length)
      const op = run.rec.ops[k]
      const label = `cut ${i}: op ${k} of ${run.rec.ops.length} (${op.kind} 0x${op.address.toString(16)}+${op.length}), ${(fraction * 100).toFixed(0)} % done`
      const board = bootWithStore(run, storeAfterCut(run.rec, k, fraction))
      await board.waitForLog(/fstor: mounted/, 500)
      const after = storeRecords(storeOf(board))
      // the interrupted write is the only one that may be missing: the store as it was before it,
      // or after it when the cut came once the entry's bytes were in (the rest of its page is the same)
      expect([storeRecords(run.rec.stores[k]), storeRecords(run.rec.stores[k + 1])], label).toContainEqual(after)
      expect(board.log.join("\n"), label).not.toContain("formatting now")
      // the meter program itself: two trials run it, the rest stop at the mount (emulated time is slow)
      if (i < 2) {
        await board.waitForLog(/citymeter: frames sealed/, PROGRAM_START_MS)
        expect(board.log.join("\n"), label).toContain(run.keyLine)
        expect(board.log.join("\n"), label).toMatch(meterLine)
      }
    },
    300_000,
  )
})
