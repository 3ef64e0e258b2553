// Ingest, in rooms: pipeline.ts (batches, lanes, retry, acks), batch.ts (one batch's
// transaction), rules.ts (what a frame does, pure), rows.ts (frame → rows), effects.ts (after the commit).
export { Ingest, type IngestOptions } from "./pipeline.js"
export type { BatchEntry, BeforeCommit, IngestOutcome, Settled } from "./batch.js"
export type { SendDownlink } from "./effects.js"
export { expandReadings } from "./rows.js"
export { CLOCK_SKEW_TOLERANCE_MS, MAX_BOOT_JUMP, MAX_SEQS_PER_INTERVAL, SEQ_SLACK, sealContext } from "./rules.js"
