// Fault injection for tests/faults-*.test.ts: main.ts installs this hook only when
// CITYMETER_FAULT_KILL_IN_BATCH is set. Nothing else imports it.
import { writeSync } from "node:fs"
import type { BeforeCommit } from "./batch.js"

/** Dies inside the first batch of at least `minFrames` (written, not committed), saying which frames were in it. */
export function killInBatch(minFrames: number): BeforeCommit {
  return (entries) => {
    if (entries.length < minFrames) return
    const ids = entries.flatMap(({ meterId, frame }) =>
      frame && (frame.kind === "readings" || frame.kind === "alarm") ? [`${meterId}/${frame.boot}/${frame.seq}`] : [],
    )
    // written synchronously: nothing of this process runs after the signal
    writeSync(
      2,
      `${JSON.stringify({ msg: "fault injection: SIGKILL inside a batch", batch: entries.length, frames: ids })}\n`,
    )
    process.kill(process.pid, "SIGKILL")
    throw new Error("unreachable: SIGKILL")
  }
}
