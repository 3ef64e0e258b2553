// The city data tier behind one interface. Engines: PostgreSQL (pg) and embedded PGlite, both
// running the same SQL (store/sql-store.ts); tests/store-contract.ts runs one suite against each.

export interface MeterRow {
  meterId: string
  online: boolean
  firstSeen: Date
  lastSeen: Date
  firmware: string | null
  board: string | null
  boot: number | null
  intervalS: number | null
  batch: number | null
  /** Wall-clock time of uptime zero in the current boot, from the last birth (for unsynced frames). */
  uptimeEpochMs: number | null
}

export interface ReadingRow {
  meterId: string
  ts: Date
  intervalS: number
  boot: number
  seq: number
  idx: number
  volumeMl: number | null
  reverseMl: number | null
  waterTotalMl: number | null
  energyWh: number | null
  energyTotalWh: number | null
  powerW: number | null
  voltageDv: number | null
  pressureMinPa: number | null
  pressureAvgPa: number | null
  pressureMaxPa: number | null
  timeSynced: boolean
  backfill: boolean
}

export interface BirthInfo {
  firmware: string
  board: string
  boot: number
  intervalS: number
  batch: number
  uptimeEpochMs: number
}

export interface AlarmEvent {
  meterId: string
  boot: number
  seq: number
  type: string
  active: boolean
  ts: Date
  value: number
}

export interface DeadLetter {
  topic: string
  meterId: string | null
  reason: string
  detail: string
  payload: Uint8Array
}

export interface DeadLetterRow extends DeadLetter {
  id: number
  receivedAt: Date
}

export interface ReadingQuery {
  from?: Date
  to?: Date
  limit?: number
}

export interface Store {
  readonly engine: string
  migrate(): Promise<void>
  /** Registers the meter if new, updates last_seen; returns the meter. */
  touchMeter(meterId: string, at: Date): Promise<MeterRow>
  getMeter(meterId: string): Promise<MeterRow | undefined>
  listMeters(): Promise<MeterRow[]>
  recordBirth(meterId: string, birth: BirthInfo, at: Date): Promise<void>
  setOnline(meterId: string, online: boolean, at: Date): Promise<void>
  /**
   * Stores one readings frame atomically and exactly once: false when (meter, boot, seq) was
   * stored before (nothing written). Returns after the commit.
   */
  insertReadings(meterId: string, boot: number, seq: number, rows: ReadingRow[], at: Date): Promise<boolean>
  /** Same contract as insertReadings, for alarm frames. */
  insertAlarm(event: AlarmEvent, at: Date): Promise<boolean>
  readings(meterId: string, q?: ReadingQuery): Promise<ReadingRow[]>
  alarms(meterId?: string): Promise<AlarmEvent[]>
  addDeadLetter(d: DeadLetter, at: Date): Promise<void>
  deadLetters(limit?: number): Promise<DeadLetterRow[]>
  ping(): Promise<void>
  close(): Promise<void>
}
