// What `citymeter rollout` prints (cli/rollout.ts): a rollout's summary, its progress and each
// meter's state, from the bridge's own serialisers (bridge/src/routes/rollouts.ts). Pure, so the
// lines can be checked without a bridge.
import type { rolloutJson } from "../bridge/src/routes/rollouts.js"
import type { MeterUpdateState, StageSpec } from "../bridge/src/store/rollouts.js"

export type Rollout = ReturnType<typeof rolloutJson>

/** A meter of a rollout as GET /rollouts/:rid/meters returns it. */
export interface RolloutMeter {
  meterId: string
  stage: number
  state: MeterUpdateState
  written: number
  /** Bytes of the image it is sent (the rollback's while rolling back). */
  size?: number
  attempts: number
  fromRelease: number | null
  reason: string | null
  startedAt: string | null
  updatedAt: string
}

/** Meter states that end a meter's way through a rollout (store/rollouts.ts FINAL_STATES). */
export const ENDED: readonly MeterUpdateState[] = ["done", "rolled_back", "failed", "skipped"]
/** Rollout states after which nothing more happens unless an operator acts. */
export const OVER = new Set(["done", "halted", "cancelled"])

export const stageLabel = (s: StageSpec | Record<string, unknown>) => {
  const st = s as StageSpec
  return st.kind === "canary"
    ? `canary ${+(st.share * 100).toFixed(2)}%`
    : st.kind === "district"
      ? `district ${st.district}`
      : "all"
}

/** Meters that have ended, of all the rollout's meters. */
export const ended = (r: Rollout) => ENDED.reduce((n, s) => n + (r.counts[s] ?? 0), 0)

export const percent = (part: number, whole: number) => (whole > 0 ? Math.floor((part / whole) * 100) : 0)

/** "pending 3, done 1": the states that have meters, in the states' order. */
export const countsLine = (r: Rollout) =>
  Object.entries(r.counts)
    .filter(([, n]) => n > 0)
    .map(([s, n]) => `${s} ${n}`)
    .join(", ") || "no meters"

/** A 20-character bar of the ended share. */
export const bar = (part: number, whole: number, width = 20) => {
  const full = whole > 0 ? Math.round((part / whole) * width) : 0
  return `[${"#".repeat(full)}${".".repeat(width - full)}]`
}

/** Columns padded to their widest cell (the last column is not padded). */
export function table(head: string[], rows: string[][]): string[] {
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)))
  const fmt = (r: string[]) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(width[i])))
      .join("  ")
      .trimEnd()
  return [fmt(head), ...rows.map(fmt)]
}

/** One line: id, state, stage, how far. */
export const progressLine = (r: Rollout) =>
  `rollout ${r.id} ${r.state}, stage ${r.stage}/${r.stages.length}: ${ended(r)}/${r.meters} meters ended ` +
  `(${percent(ended(r), r.meters)}%) ${bar(ended(r), r.meters)} ${countsLine(r)}`

/** The head of `show`: what is rolled out, how, and how far it got. */
export function describeRollout(r: Rollout): string[] {
  const hours = r.hours ? `, hours ${r.hours.from}-${r.hours.to} UTC` : ""
  const lines = [
    `rollout ${r.id}: release ${r.releaseId} (${r.board} ${r.version}), ${r.state}`,
    `stages: ${r.stages.map((s, i) => `${i + 1} ${stageLabel(s)}${i + 1 === r.stage && !OVER.has(r.state) ? " (current)" : ""}`).join(", ")}`,
    `concurrency ${r.concurrency}, verify ${r.verifyS} s, window ${r.windowS} s${hours}`,
    `progress: stage ${r.stage}/${r.stages.length}, ${ended(r)}/${r.meters} meters ended (${percent(ended(r), r.meters)}%) ${bar(ended(r), r.meters)}`,
    `meters: ${countsLine(r)}`,
  ]
  if (r.reason) lines.push(`reason: ${r.reason}`)
  lines.push(`created ${r.createdAt}, updated ${r.updatedAt}`)
  return lines
}

/** Each meter: stage, state, % of the image written, attempts, and why it ended so. */
export function meterTable(meters: RolloutMeter[], size: number): string[] {
  if (!meters.length) return ["(no meters)"]
  return table(
    ["METER", "STAGE", "STATE", "WRITTEN", "ATTEMPTS", "REASON"],
    meters.map((m) => [
      m.meterId,
      String(m.stage),
      m.state,
      `${percent(m.written, m.size ?? size)}%`,
      String(m.attempts),
      m.reason ?? "",
    ]),
  )
}

/** The failed and rolled-back meters with their reasons (what an operator looks at first). */
export function problems(meters: RolloutMeter[]): string[] {
  const bad = meters.filter((m) => m.state === "failed" || m.state === "rolled_back")
  return bad.map((m) => `  ${m.meterId}: ${m.state}${m.reason ? `: ${m.reason}` : ""}`)
}

/** `list`: one row per rollout. */
export function rolloutTable(rollouts: Rollout[]): string[] {
  if (!rollouts.length) return ["no rollouts"]
  return table(
    ["ID", "RELEASE", "BOARD", "VERSION", "STATE", "STAGE", "ENDED", "METERS", "REASON"],
    rollouts.map((r) => [
      String(r.id),
      String(r.releaseId),
      r.board,
      r.version,
      r.state,
      `${r.stage}/${r.stages.length}`,
      `${ended(r)}/${r.meters} (${percent(ended(r), r.meters)}%)`,
      countsLine(r),
      r.reason ?? "",
    ]),
  )
}
