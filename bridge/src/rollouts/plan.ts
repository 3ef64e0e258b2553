// The rules of a rollout (issue 23 item 4), pure so that tests need no meter, link or database:
// which stage each meter is in, whether a meter may be started now, and what a rollout does next.
import { createHash } from "node:crypto"
import type { MeterRow } from "../store/store.js"
import {
  FINAL_STATES,
  type MeterUpdateState,
  type RolloutMeterRow,
  type StageSpec,
  type UpdateHours,
} from "../store/rollouts.js"

export const MAX_STAGES = 10
/** What a meter running a release says in its Birth (firmware/uplink.ts, proto Birth.firmware). */
export const firmwareOf = (version: string) => `citymeter-fw ${version}`
/** A meter in one of these has an update in hand. */
export const IN_FLIGHT: ReadonlySet<MeterUpdateState> = new Set(["transferring", "verifying", "rolling_back"])

/** What is wrong with a rollout's stages (empty: nothing). */
export function stageErrors(stages: StageSpec[]): string[] {
  const why: string[] = []
  if (!stages.length) why.push("a rollout needs at least one stage")
  if (stages.length > MAX_STAGES) why.push(`at most ${MAX_STAGES} stages`)
  stages.forEach((s, i) => {
    if (s.kind === "canary" && !(s.share > 0 && s.share < 1)) why.push(`stage ${i + 1}: a canary share is in (0, 1)`)
    if (s.kind === "all" && i !== stages.length - 1) why.push(`stage ${i + 1}: 'all' can only be the last stage`)
  })
  const districts = stages.flatMap((s) => (s.kind === "district" ? [s.district] : []))
  if (new Set(districts).size !== districts.length) why.push("a district is named in two stages")
  return why
}

/**
 * Each meter's stage, in stage order: a canary takes ceil(share × the meters not yet taken), picked
 * by a hash of the seed and the meter id (the same rollout picks the same meters, and meters of
 * every district come up); a district stage takes that district's meters left; 'all' the rest.
 * Meters no stage takes are not in the rollout.
 */
export function assignStages(
  meters: { meterId: string; district: string | null }[],
  stages: StageSpec[],
  seed: string,
): { meterId: string; stage: number }[] {
  const rank = (id: string) => createHash("sha256").update(`${seed}\0${id}`).digest("hex")
  let left = [...meters].sort((a, b) => (rank(a.meterId) < rank(b.meterId) ? -1 : 1))
  const out: { meterId: string; stage: number }[] = []
  stages.forEach((s, stage) => {
    let take: typeof left
    if (s.kind === "canary") take = left.slice(0, left.length ? Math.max(1, Math.ceil(s.share * left.length)) : 0)
    else if (s.kind === "district") take = left.filter((m) => m.district === s.district)
    else take = left
    const taken = new Set(take.map((m) => m.meterId))
    left = left.filter((m) => !taken.has(m.meterId))
    for (const m of take) out.push({ meterId: m.meterId, stage })
  })
  return out.sort((a, b) => a.stage - b.stage || (a.meterId < b.meterId ? -1 : 1))
}

/** Whether `now` is inside the maintenance window (UTC minutes [from, to), wrapping past midnight). */
export function inHours(now: Date, hours: UpdateHours | null): boolean {
  if (!hours) return true
  const m = now.getUTCHours() * 60 + now.getUTCMinutes()
  return hours.fromMin <= hours.toMin ? m >= hours.fromMin && m < hours.toMin : m >= hours.fromMin || m < hours.toMin
}

/** Why a meter cannot be updated: `never` (it is skipped) or `wait` (it stays pending). */
export type Blocker = { kind: "never"; why: string } | { kind: "wait"; why: string } | undefined

/**
 * Whether a pending meter may be started now. Never: it left the registry, is of another board,
 * is not sealed (the update window is a sealed downlink) or has no link key. Wait: it is offline,
 * or has an open alarm (a meter in alarm is never updated).
 */
export function blockerOf(
  meter: MeterRow | undefined,
  board: string,
  hasLinkKey: boolean,
  openAlarms: number,
): Blocker {
  if (!meter) return { kind: "never", why: "not in the registry" }
  if (meter.board !== board) return { kind: "never", why: `board ${meter.board ?? "(no birth)"}, not ${board}` }
  if (meter.seal.policy !== "sealed" || !meter.seal.key)
    return { kind: "never", why: "not sealed with a key: it acts on no update window" }
  if (!hasLinkKey) return { kind: "never", why: "no WSSK link key (PUT /meters/:id/link-key)" }
  if (!meter.online || meter.inactive) return { kind: "wait", why: "offline" }
  if (openAlarms > 0) return { kind: "wait", why: "an alarm is open" }
  return undefined
}

/**
 * What a running rollout does next, from its meters: start the `startable` pending meters of
 * stages up to the current one (at most `room` of them); when the current stage has nothing in
 * flight and nothing startable, go to the next stage (a meter that waits, offline or in alarm, is
 * carried along). After the last stage it ends (done) only when no meter waits: an offline meter is
 * updated when it comes back, or the operator cancels.
 */
export function nextStep(
  rows: RolloutMeterRow[],
  stage: number,
  stages: number,
  startable: (r: RolloutMeterRow) => boolean,
  room: number,
): { start: RolloutMeterRow[]; advance: boolean; finish: boolean } {
  const mine = rows.filter((r) => r.stage <= stage)
  const inFlight = mine.some((r) => IN_FLIGHT.has(r.state))
  const ready = mine.filter((r) => r.state === "pending" && startable(r))
  const start = ready.slice(0, Math.max(0, room))
  const idle = !inFlight && !ready.length
  const last = stage >= stages - 1
  const waiting = mine.some((r) => r.state === "pending")
  return { start, advance: idle && !last, finish: idle && last && !waiting }
}

/** Counts by state, with every state present. */
export const countStates = (rows: { state: MeterUpdateState }[]) => {
  const n: Record<string, number> = {}
  for (const r of rows) n[r.state] = (n[r.state] ?? 0) + 1
  return n
}

export const isFinal = (s: MeterUpdateState) => FINAL_STATES.has(s)
