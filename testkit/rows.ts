// Stored reading rows for tests that write the data tier directly: every channel absent unless given.
import type { ReadingRow } from "../bridge/src/store/store.js"

/** A reading row of `meterId` at `ts`: boot 1, seq 1, idx 0, 15-minute interval, no channel, synced. */
export function readingRow(meterId: string, ts: Date, o: Partial<ReadingRow> = {}): ReadingRow {
  return {
    meterId,
    ts,
    intervalS: 900,
    boot: 1,
    seq: 1,
    idx: 0,
    volumeMl: null,
    reverseMl: null,
    waterTotalMl: null,
    energyWh: null,
    energyTotalWh: null,
    powerW: null,
    voltageDv: null,
    pressureMinPa: null,
    pressureAvgPa: null,
    pressureMaxPa: null,
    timeSynced: true,
    backfill: false,
    tsEstimated: false,
    afterReboot: false,
    ...o,
  }
}
