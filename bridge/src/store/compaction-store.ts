// The Store's compaction of readings (store/compaction.ts implements it), apart from the job so
// that the Store interface does not import the block codec (which imports the Store's row types).
export interface CompactionResult {
  /** Where the hourly rollup is complete from, after this run. */
  horizon: Date
  /** Meter-months written (new blocks and blocks a late frame was merged into). */
  blocks: number
  /** Of those, blocks that already existed (late frames merged in). */
  merged: number
  /** Readings moved from rows into blocks. */
  readings: number
  /** Months whose row partitions (readings, rollup_hour) were emptied. */
  truncated: string[]
  /** Month partitions left for the next run: a reader held them past the lock timeout. */
  busy: string[]
}

export interface CompactionStore {
  /**
   * Compacts every month that ended before `before` (store/compaction.ts); `metersPerTx` meters
   * per transaction. `afterBatch` runs after each committed transaction (tests cut there).
   */
  compactReadings(before: Date, opts?: CompactionOptions): Promise<CompactionResult>
}

export interface CompactionOptions {
  metersPerTx?: number
  afterBatch?: (batch: number) => Promise<void> | void
}
