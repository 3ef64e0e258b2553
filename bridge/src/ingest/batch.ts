// One batch inside its transaction: the meters' rows read once, each frame judged by the rules in
// arrival order, then the writes, a few statements for the whole batch.
import type { AlarmFrame, ReadingsFrame, RejectCode } from "../codec/frames.js"
import type { DeadLetter, FrameOutcome, IngestTx, MeterRow } from "../store/store.js"
import type { UpKind } from "../topics.js"
import {
  conflict,
  judgeFrame,
  staleDeath,
  type ArrivalRead,
  type MeterWrite,
  type RuleOptions,
  type Verdict,
} from "./rules.js"

/** What became of one uplink. */
export type IngestOutcome = "stored" | "duplicate" | RejectCode

/** handle()'s outcome as a callback (submit): no promise per frame on the bridge's hot path. */
export type Settled = (err: Error | null, outcome?: IngestOutcome) => void

/** An uplink waiting for its batch. */
export interface Arrival {
  topic: string
  payload: Uint8Array
  at: Date
  /** performance.now() at arrival. */
  since: number
  /** From the topic; undefined when it is not an uplink topic. */
  up: { meterId: string; kind: UpKind } | undefined
  sha256: string
  /** Read once, on arrival (rules.ts readArrival); undefined when it is not an uplink topic. */
  read: ArrivalRead | undefined
  /** Called once: with the outcome after the commit, or with an error when ingest stops first. */
  done: Settled
}

/**
 * One frame's way through a batch: judged inside the batch's transaction, written with the batch,
 * and settled (metrics, logs, downlinks) after the commit. Built anew on every attempt of the batch.
 */
export interface BatchEntry extends Partial<Omit<Verdict, "meter" | "touch" | "writes" | "downlinkKey">> {
  arrival: Arrival
  kind: UpKind | undefined
  meterId: string | null
  /** The key downlinks to this meter are sealed with (null: unsealed), as the frame found it. */
  downlinkKey: Uint8Array | null
  /** The ledger's answer: stored, duplicate or conflict. */
  claim?: FrameOutcome
  /** A conflict: the content hash of the frame stored under the same id. */
  storedSha256?: string
  /** The meter was INACTIVE: its alarm cleared by this frame. */
  activated?: boolean
  /** A FRAME_CONFLICT alarm was raised by this frame. */
  conflictAlarm?: boolean
}

export const batchEntry = (a: Arrival): BatchEntry => ({
  arrival: a,
  kind: a.up?.kind,
  meterId: a.up?.meterId ?? null,
  downlinkKey: null,
})

export function deadLetterOf(entry: BatchEntry): DeadLetter {
  return {
    topic: entry.arrival.topic,
    meterId: entry.meterId,
    reason: entry.error!.code,
    detail: entry.error!.message,
    payload: entry.arrival.payload,
    storedSha256: entry.storedSha256,
  }
}

/** Test hook: runs inside each batch's transaction after its writes, before its commit. */
export type BeforeCommit = (entries: readonly BatchEntry[]) => void

export interface BatchOptions extends RuleOptions {
  beforeCommit?: BeforeCommit
}

/**
 * The batch inside its transaction: the meters' rows (one query, before any frame is opened: a
 * row says whether and with which keys its frames are sealed), each frame judged in arrival order
 * against its meter's row as the earlier frames of the batch left it (a birth moves the seq window
 * of the frames after it), then the writes. `attempt` sees the frames before any write fails.
 */
export async function writeBatch(
  tx: IngestTx,
  arrivals: Arrival[],
  opts: BatchOptions,
  attempt: (entries: BatchEntry[]) => void,
): Promise<BatchEntry[]> {
  const entries = arrivals.map(batchEntry)
  attempt(entries)
  const ids = [...new Set(entries.flatMap((entry) => (entry.meterId !== null && entry.kind ? [entry.meterId] : [])))]
  const meters: Map<string, MeterRow> = await tx.getMeters(ids)
  const touches = new Map<string, { meterId: string; firstAt: Date; lastAt: Date }>()
  const writes: { entry: BatchEntry; meterId: string; write: MeterWrite }[] = []
  for (const entry of entries) {
    const { at, payload, read } = entry.arrival
    const meter = entry.meterId === null ? undefined : meters.get(entry.meterId)
    const input = { meterId: entry.meterId, kind: entry.kind, payload, at, read }
    const { meter: rowAfter, touch, writes: rowWrites, ...verdict } = judgeFrame(meter, input, opts)
    Object.assign(entry, verdict)
    const meterId = entry.meterId
    if (meterId === null) continue
    if (rowAfter) meters.set(meterId, rowAfter)
    if (touch) {
      const t = touches.get(meterId)
      if (!t) touches.set(meterId, { meterId, firstAt: at, lastAt: at })
      else if (at > t.lastAt) t.lastAt = at
    }
    for (const write of rowWrites) writes.push({ entry, meterId, write })
  }
  // meters first (registered, last seen), then their rows' changes in frame order
  await tx.touchMeters([...touches.values()])
  for (const { entry, meterId, write } of writes) await applyMeterWrite(tx, entry, meterId, write)
  // the ledger decides stored, duplicate or conflict for every readings and alarm frame at once
  const claims = entries.filter((entry) => !entry.error && (entry.rows || entry.event))
  const outcomes = await tx.claimFrames(
    claims.map((entry) => {
      const frame = entry.frame as ReadingsFrame | AlarmFrame
      const { sha256, at } = entry.arrival
      return { meterId: entry.meterId!, boot: frame.boot, seq: frame.seq, sha256, kind: frame.kind, at }
    }),
  )
  claims.forEach((entry, i) => (entry.claim = outcomes[i]))
  const stored = claims.filter((entry) => entry.claim!.kind === "stored")
  await tx.writeReadings(stored.flatMap((entry) => entry.rows ?? []))
  await tx.writeAlarms(stored.flatMap((entry) => (entry.event ? [entry.event] : [])))
  for (const entry of claims) {
    const c = entry.claim!
    if (c.kind !== "conflict") continue
    // same id, other content: acknowledged so the meter's queue drains, never dropped unseen
    const frame = entry.frame as ReadingsFrame | AlarmFrame
    entry.storedSha256 = c.storedSha256
    entry.error = conflict(frame, entry.arrival.sha256, c.storedSha256)
    entry.conflictAlarm = await tx.raiseBridgeAlarm(entry.meterId!, "FRAME_CONFLICT", frame.seq, entry.arrival.at)
  }
  await tx.addDeadLetters(
    entries.filter((entry) => entry.error).map((entry) => ({ letter: deadLetterOf(entry), at: entry.arrival.at })),
  )
  opts.beforeCommit?.(entries)
  return entries
}

async function applyMeterWrite(tx: IngestTx, entry: BatchEntry, meterId: string, write: MeterWrite) {
  const at = entry.arrival.at
  switch (write.op) {
    case "setSeal":
      await tx.setSeal(meterId, write.seal)
      return
    case "markActive":
      entry.activated = await tx.markActive(meterId, at)
      return
    case "recordBirth":
      return tx.recordBirth(meterId, write.birth, at)
    case "recordDeath":
      // the row decides (another bridge may have seen a birth since): a stale death changes nothing
      if (!(await tx.recordDeath(meterId, write.boot, at))) entry.error = staleDeath(write.boot)
      return
  }
}
