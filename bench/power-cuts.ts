// Power-cut trials on the emulated RP2040 (`npm run bench:power-cuts [-- --fractions 0,0.5 --programs 10]`):
// a sealed citymeter_picow meter's first boot and frames are recorded once, then the power is cut
// inside every one of its store writes at several points, and each cut is booted on our runtime and
// on the unpatched upstream one. Counted per runtime: stores formatted (everything lost, program
// included), records lost beyond the write the cut interrupted, and — for a sample of cuts, since
// each costs seconds of emulated time — whether the meter program came back with the same key.
import {
  bootWithStore,
  PROGRAM_START_MS,
  recordSealedMeter,
  storeAfterCut,
  storeOf,
  storeRecords,
  UPSTREAM_RUNTIME_UF2,
} from "../testkit/rp2040/power-cut.js"

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(name)
  return i >= 0 ? process.argv[i + 1] : dflt
}
const fractions = arg("--fractions", "0,0.1,0.25,0.5,0.75,0.9,0.99").split(",").map(Number)
const programEvery = Number(arg("--programs-every", "7"))

const t0 = Date.now()
const run = await recordSealedMeter("cut-bench", 3)
console.log(`recorded ${run.rec.ops.length} store writes (${run.speed})`)

const sameRecords = (a: Map<string, string>, b: Map<string, string>) =>
  a.size === b.size && [...a].every(([k, v]) => b.get(k) === v)

interface Tally {
  cuts: number
  formatted: number
  recordsLost: number
  programRuns: number
  programBack: number
  keyKept: number
}
const tally = (): Tally => ({ cuts: 0, formatted: 0, recordsLost: 0, programRuns: 0, programBack: 0, keyKept: 0 })
const ours = tally()
const upstream = tally()

let n = 0
for (let k = 0; k < run.rec.ops.length; k++)
  for (const fraction of fractions) {
    const store = storeAfterCut(run.rec, k, fraction)
    const before = storeRecords(run.rec.stores[k])
    const after = storeRecords(run.rec.stores[k + 1])
    const runProgram = n++ % programEvery === 0
    for (const [runtime, t] of [
      [undefined, ours],
      [UPSTREAM_RUNTIME_UF2, upstream],
    ] as const) {
      const board = bootWithStore(run, store, runtime)
      await board.waitForLog(/fstor: mounted/, 500)
      t.cuts++
      if (board.log.some((l) => l.includes("formatting now"))) t.formatted++
      const now = storeRecords(storeOf(board))
      // the interrupted write may be missing (or complete, once its entry's bytes were in); nothing else
      if (!sameRecords(now, before) && !sameRecords(now, after))
        t.recordsLost += [...before.keys()].filter((key) => now.get(key) !== before.get(key)).length
      if (runProgram) {
        t.programRuns++
        const started = await board
          .waitForLog(/citymeter: frames (sealed|open)/, PROGRAM_START_MS)
          .then(() => true)
          .catch(() => false)
        if (started) t.programBack++
        if (board.log.includes(run.keyLine)) t.keyKept++
      }
    }
  }

const row = (name: string, t: Tally) =>
  `| ${name} | ${t.cuts} | ${t.formatted} | ${t.recordsLost} | ${t.programBack} of ${t.programRuns} | ${t.keyKept} of ${t.programRuns} |`
console.log(
  `\n${run.rec.ops.length} store writes × ${fractions.length} cut points (${fractions.join(", ")} of the write done)\n`,
)
console.log("| runtime | cuts | store formatted | records lost (beyond the cut write) | program back | same key |")
console.log("|---|---|---|---|---|---|")
console.log(row("ours (patched jd_fstor.c)", ours))
console.log(row("upstream", upstream))
console.log(`\nwall time ${((Date.now() - t0) / 1000).toFixed(0)} s`)
process.exit(0)
