// Single writes for tests that set up the data tier directly. The bridge writes only in ingest
// batches (Store.ingestBatch), so these are one-write batches: the same statements ingest runs.
import type {
  AlarmEvent,
  BirthInfo,
  DeadLetter,
  FrameKey,
  FrameOutcome,
  MeterRow,
  ReadingRow,
  Store,
} from "../bridge/src/store/store.js"

/** Registers the meter if new and advances its last_seen; returns its row. */
export async function touchMeter(store: Store, meterId: string, at: Date): Promise<MeterRow> {
  return store.ingestBatch(async (tx) => {
    await tx.touchMeters([{ meterId, firstAt: at, lastAt: at }])
    return (await tx.getMeters([meterId])).get(meterId)!
  })
}

/** Stores one readings frame exactly once (the ledger's claim, then its rows); returns the claim. */
export function insertReadings(store: Store, f: FrameKey, rows: ReadingRow[], at: Date): Promise<FrameOutcome> {
  return store.ingestBatch(async (tx) => {
    const [claim] = await tx.claimFrames([{ ...f, kind: "readings", at }])
    if (claim.kind === "stored") await tx.writeReadings(rows)
    return claim
  })
}

/** insertReadings for one alarm frame. */
export function insertAlarm(store: Store, e: AlarmEvent, at: Date, sha256?: string): Promise<FrameOutcome> {
  return store.ingestBatch(async (tx) => {
    const [claim] = await tx.claimFrames([{ meterId: e.meterId, boot: e.boot, seq: e.seq, sha256, kind: "alarm", at }])
    if (claim.kind === "stored") await tx.writeAlarms([e])
    return claim
  })
}

export const recordBirth = (store: Store, meterId: string, birth: BirthInfo, at: Date) =>
  store.ingestBatch((tx) => tx.recordBirth(meterId, birth, at))

export const markActive = (store: Store, meterId: string, at: Date) =>
  store.ingestBatch((tx) => tx.markActive(meterId, at))

export const raiseBridgeAlarm = (store: Store, meterId: string, type: string, value: number, at: Date) =>
  store.ingestBatch((tx) => tx.raiseBridgeAlarm(meterId, type, value, at))

export const addDeadLetter = (store: Store, letter: DeadLetter, at: Date) =>
  store.ingestBatch((tx) => tx.addDeadLetters([{ letter, at }]))
