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
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { provision } from "../../cli/provision.js"
import { Board, speedLine, uniqueIdFor } from "../../testkit/rp2040/board.js"
import { bundledImage } from "../../testkit/rp2040/bundle.js"
import {
  flashWithStore,
  recordStoreWrites,
  seededRandom,
  storeAfterCut,
  storeOf,
  storeRecords,
  type StoreRecording,
  UPSTREAM_RUNTIME_UF2,
} from "../../testkit/rp2040/power-cut.js"

const CHIP = uniqueIdFor(2040)
/** Emulated ms from reset to the meter program's first lines (the runtime waits 1.1 s: devsmgr.c). */
const PROGRAM_START_MS = 4000

let settingsDir: string
let rec: StoreRecording
let sha256: string
/** What the meter said on its first boot: its id and its sealing key's id. */
let meterLine: RegExp
let keyLine: string
const t0 = Date.now()

beforeAll(async () => {
  settingsDir = mkdtempSync(join(tmpdir(), "citymeter-power-cut-"))
  // a sealed meter (SEAL_KEY in the store) sending a frame every 2 s: a store write every frame
  provision(
    { meterId: "cut-1", board: "citymeter_picow", broker: "mqtt://10.0.0.1:1883", intervalS: 2, batch: 1 },
    settingsDir,
  )
  const image = await bundledImage("citymeter_picow", { settings: settingsDir })
  sha256 = image.sha256
  const board = new Board({ uf2: image.uf2, uniqueId: CHIP })
  const { recording, finish } = recordStoreWrites(board)
  await board.waitForLog(/citymeter: frames sealed/, PROGRAM_START_MS)
  keyLine = board.log.find((l) => l.includes("citymeter: frames sealed"))!
  meterLine = /citymeter: meter cut-1 boot \d+/
  // the boot's writes and a few frames' (no network here: every frame stays queued in flash)
  await board.waitForLog(/citymeter: frame boot=\d+ seq=3 /, 8000)
  await board.runFor(300)
  finish()
  rec = recording
  console.log(`rp2040-power-cut: recorded ${rec.ops.length} store writes; ${speedLine(board)}`)
}, 600_000)

afterAll(() => {
  if (settingsDir) rmSync(settingsDir, { recursive: true, force: true })
  console.log(`rp2040-power-cut: file wall time ${((Date.now() - t0) / 1000).toFixed(1)} s`)
})

/** The first value write of the recording whose entry follows it (a setting's two programs). */
function firstValueThenEntry(): number {
  for (let k = 0; k + 1 < rec.ops.length; k++)
    if (
      rec.ops[k].kind === "program" &&
      rec.ops[k + 1].kind === "program" &&
      rec.ops[k + 1].address < rec.ops[k].address
    )
      return k
  throw new Error("no value-then-entry write pair recorded")
}

async function bootAfter(store: Uint8Array, runtime?: string): Promise<Board> {
  return new Board({ flash: flashWithStore(rec, store, runtime), uniqueId: CHIP })
}

describe("a power cut between a setting's value and its entry (the runtime's store, jd_fstor.c)", () => {
  test("upstream runtime: the next boot formats the store and the meter program is gone", async () => {
    const k = firstValueThenEntry()
    const board = await bootAfter(storeAfterCut(rec, k + 1, 0), UPSTREAM_RUNTIME_UF2)
    await board.waitForLog(/fstor: formatting now/, 500)
    // the runtime names the program it found (none: an empty one) and starts no citymeter code
    await board.waitForLog(/DevS-SHA256: /, PROGRAM_START_MS)
    await board.runFor(300)
    const log = board.log.join("\n")
    expect(log).toContain("fstor: mount failure: non ff")
    expect(log).not.toContain(`DevS-SHA256: ${sha256}`)
    expect(log).not.toMatch(/citymeter:/)
  }, 300_000)

  test("our runtime: the whole entries are kept, the program starts with the same meter id and key", async () => {
    const k = firstValueThenEntry()
    const before = storeRecords(rec.stores[k + 1]) // the value is written, its entry is not
    const board = await bootAfter(storeAfterCut(rec, k + 1, 0))
    await board.waitForLog(/fstor: mounted/, 500)
    expect(board.log.join("\n")).toMatch(/fstor: torn write at the end of gen \d+ \(power cut\?\): recovering/)
    expect(board.log.join("\n")).not.toContain("formatting now")
    // every record survives, before the program writes anything
    expect(storeRecords(storeOf(board))).toEqual(before)
    await board.waitForLog(/citymeter: frames sealed/, PROGRAM_START_MS)
    const log = board.log.join("\n")
    expect(log).toContain(`DevS-SHA256: ${sha256}`)
    expect(log).toMatch(meterLine)
    expect(log).toContain(keyLine)
  }, 300_000)
})

describe("power cuts at random points of the store's writes (our runtime)", () => {
  // seeded: a failure names its cut, and the same cut replays
  const random = seededRandom(20)
  const trials = Array.from({ length: 8 }, (_, i) => ({ name: `cut ${i}`, i, pick: random(), fraction: random() }))

  test.each(trials)(
    "$name: every record written before the cut is there after the reboot; the program, meter id and key survive",
    async ({ pick, fraction, i }) => {
      const k = Math.floor(pick * rec.ops.length)
      const op = rec.ops[k]
      const label = `cut ${i}: op ${k} of ${rec.ops.length} (${op.kind} 0x${op.address.toString(16)}+${op.length}), ${(fraction * 100).toFixed(0)} % done`
      const board = await bootAfter(storeAfterCut(rec, k, fraction))
      await board.waitForLog(/fstor: mounted/, 500)
      const after = storeRecords(storeOf(board))
      // the interrupted write is the only one that may be missing: the store as it was before it,
      // or after it when the cut came once the entry's bytes were in (the rest of its page is the same)
      expect([storeRecords(rec.stores[k]), storeRecords(rec.stores[k + 1])], label).toContainEqual(after)
      expect(board.log.join("\n"), label).not.toContain("formatting now")
      // the meter program itself: two trials run it, the rest stop at the mount (emulated time is slow)
      if (i < 2) {
        await board.waitForLog(/citymeter: frames sealed/, PROGRAM_START_MS)
        expect(board.log.join("\n"), label).toContain(keyLine)
        expect(board.log.join("\n"), label).toMatch(meterLine)
      }
    },
    300_000,
  )
})
