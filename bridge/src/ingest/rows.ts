// Frame → rows: what a decoded frame writes, with no decision in it (rules.ts decides whether).
import type { AlarmFrame, BirthFrame, FrameMeta, ReadingsFrame } from "../codec/frames.js"
import type { AlarmEvent, BirthInfo, ReadingRow } from "../store/store.js"

/**
 * One row per interval. Timestamps: the meter's own when it was time-synced; else its uptime
 * mapped through the boot's birth (uptimeEpochMs); else counted back from the arrival time.
 */
export function expandReadings(
  meterId: string,
  f: ReadingsFrame,
  uptimeEpochMs: number | null,
  at: Date,
): ReadingRow[] {
  const n = f.intervals.length
  const stepMs = f.intervalS * 1000
  const startMs = f.timeSynced
    ? f.startS * 1000
    : uptimeEpochMs !== null
      ? uptimeEpochMs + f.startS * 1000
      : at.getTime() - n * stepMs
  const endMs = startMs + n * stepMs
  const backfill = f.replayed || at.getTime() - endMs > 2 * stepMs + 30_000
  // neither the meter's clock nor its boot's birth: the arrival-based start is a placeholder
  const tsEstimated = !f.timeSynced && uptimeEpochMs === null
  // Per-interval cumulative totals, counted back from the batch total at the end of the batch.
  let water = f.waterTotalMl
  let energy = f.energyTotalWh
  const rows: ReadingRow[] = new Array(n)
  for (let i = n - 1; i >= 0; i--) {
    const v = f.intervals[i]
    rows[i] = {
      meterId,
      ts: new Date(startMs + i * stepMs),
      intervalS: f.intervalS,
      boot: f.boot,
      seq: f.seq,
      idx: i,
      volumeMl: v.volumeMl ?? null,
      reverseMl: v.reverseMl ?? null,
      waterTotalMl: water ?? null,
      energyWh: v.energyWh ?? null,
      energyTotalWh: energy ?? null,
      powerW: v.powerW ?? null,
      voltageDv: v.voltageDv ?? null,
      pressureMinPa: v.pressureMinPa ?? null,
      pressureAvgPa: v.pressureAvgPa ?? null,
      pressureMaxPa: v.pressureMaxPa ?? null,
      timeSynced: f.timeSynced,
      backfill,
      tsEstimated,
      // the counts missing after a restart are missing before the frame's first interval
      afterReboot: f.afterReboot && i === 0,
    }
    if (water !== undefined) water -= v.volumeMl ?? 0
    if (energy !== undefined) energy -= v.energyWh ?? 0
  }
  return rows
}

/** An alarm edge as stored: at the meter's time when it was synced, else at its arrival. */
export function alarmEvent(meterId: string, f: AlarmFrame, at: Date): AlarmEvent {
  return {
    meterId,
    boot: f.boot,
    seq: f.seq,
    type: f.type,
    active: f.active,
    ts: f.timeSynced ? new Date(f.timeS * 1000) : at,
    value: f.value,
  }
}

/** A birth as the registry records it; its uptime placed on the wall clock by the arrival time. */
export function birthInfo(f: BirthFrame & FrameMeta, at: Date) {
  return {
    firmware: f.firmware,
    board: f.board,
    boot: f.boot,
    seq: f.seq,
    link: f.link,
    intervalS: f.intervalS,
    batch: f.batch,
    uptimeEpochMs: at.getTime() - f.uptimeS * 1000,
    channels: f.channels,
    alarmRules: f.alarmRules,
    queued: f.queued,
    dropped: f.dropped,
    unstored: f.unstored,
  } satisfies BirthInfo
}
