// The city data tier behind one interface. Engines: PostgreSQL (pg) and embedded PGlite, both
// running the same SQL (store/sql-store.ts); tests/store-contract.ts runs one suite against each.
import type { FleetCounts } from "../metrics.js"
import type { CompactionStore } from "./compaction-store.js"
import type { DmaStore } from "./dma-store.js"
import type { LedgerStore } from "./ledger-blocks.js"
import type { LinkKeyStore } from "./link-keys.js"
import type { BulkReadStore } from "./reading-columns-store.js"
import type { RolloutStore } from "./rollouts.js"

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
  /** Missed its expected frames (see checkInactivity); an INACTIVE alarm is open. */
  inactive: boolean
  /** The last birth: the seq it carried (last seq assigned in that boot) and when it arrived. */
  birthSeq: number | null
  bornAt: Date | null
  /** The last birth's connection number in its boot (proto Uplink.link). */
  birthLink: number | null
  /** What the meter said it measures and which alarm rules it evaluates (proto Birth). */
  channels: string[]
  alarmRules: string[]
  /** Frames in the meter's queue and frames it had to drop, as its last birth said (proto Birth 7, 8). */
  queued: number | null
  dropped: number | null
  /**
   * Flash writes its settings store refused since that boot, as its last birth said (proto Birth
   * 14): not zero means the store is full and frames live in the meter's RAM only (issue 20).
   */
  unstored: number | null
  /** Where the meter is (the registry: `citymeter provision --lat …`, PUT /meters/:id/location). */
  location: MeterLocation | null
  /** Sealing: policy, key in force and next key (in a rotation); never leaves the bridge (no route, log, export). */
  seal: MeterSeal
}

/** A meter's place: WGS 84 degrees, a street address and the utility's district. */
export interface MeterLocation {
  lat: number
  lon: number
  address: string | null
  district: string | null
}

export interface MeterSeal {
  policy: "sealed" | "open"
  key: Uint8Array | null
  nextKey: Uint8Array | null
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
  /**
   * ts is the bridge's estimate, not a time: an unsynced frame of a boot the bridge never saw
   * born, placed back from its arrival (ingest/rows.ts expandReadings). Nobody knows when it was made.
   */
  tsEstimated: boolean
  /**
   * The meter's first interval after it restarted (proto ReadingBatch.after_reboot): what its
   * pulse counters would have counted while it was off is missing; billing treats the consumption
   * since the previous reading as possibly incomplete.
   */
  afterReboot: boolean
}

export interface BirthInfo {
  firmware: string
  board: string
  boot: number
  /** The connection of this boot (proto Uplink.link). */
  link?: number
  /** proto Birth.channels and alarm_rules, by enum name. */
  channels?: string[]
  alarmRules?: string[]
  /** proto Birth.queued, dropped and unstored. */
  queued?: number
  dropped?: number
  unstored?: number
  /** The last seq the meter assigned in this boot (proto Uplink.seq of a Birth). */
  seq: number
  intervalS: number
  batch: number
  uptimeEpochMs: number
}

/** A frame's identity in the ledger: (meter, boot, seq), and the SHA-256 (hex) of its payload. */
export interface FrameKey {
  meterId: string
  boot: number
  seq: number
  sha256?: string
}

/**
 * What claiming a frame in the ledger found: stored now; a duplicate (stored before with the
 * same content, or before content hashes were kept); a conflict (stored before, other content:
 * storedSha256 is its hash, or the first 16 hex digits a ledger block keeps, ledger-blocks.ts).
 */
export type FrameOutcome = { kind: "stored" } | { kind: "duplicate" } | { kind: "conflict"; storedSha256: string }

export interface AlarmEvent {
  meterId: string
  boot: number
  seq: number
  type: string
  active: boolean
  ts: Date
  value: number
}

/** An alarm as stored: edges sent by meters, and edges the bridge raises itself (INACTIVE). */
export interface AlarmRow extends AlarmEvent {
  /** "meter": an alarm frame (boot, seq) from the meter; "bridge": raised by the bridge (boot 0, seq = its id). */
  source: "meter" | "bridge"
  /** An operator's acknowledgement of this edge, if any (Store.ackAlarm). */
  ack?: AlarmAck
}

/** Who acknowledged an alarm edge, when, and their note. */
export interface AlarmAck {
  by: string
  at: Date
  note: string
}

/** An alarm edge's identity: (meter, boot, seq); bridge alarms have boot 0 (AlarmRow.source). */
export interface AlarmKey {
  meterId: string
  boot: number
  seq: number
}

/** Meters, open alarms and consumption of one district (null: meters without a district). */
export interface DistrictRow {
  district: string | null
  meters: number
  online: number
  openAlarms: number
  /** Sum of the interval volumes and energies of readings in the range. */
  waterMl: number
  energyWh: number
}

export interface AlarmQuery {
  meterId?: string
  /** Only alarms still open: the newest edge of its (meter, type) is a raise. */
  open?: boolean
  from?: Date
  to?: Date
  limit?: number
}

export const BUCKETS = ["15min", "hour", "day", "month"] as const
export type Bucket = (typeof BUCKETS)[number]

export interface ConsumptionQuery {
  bucket: Bucket
  from?: Date
  to?: Date
  /** IANA time zone for day and month boundaries; default UTC. */
  tz?: string
}

/**
 * Consumption of one bucket. The rule (store/consumption.ts, README): each interval reading consumes
 * its cumulative total minus the previous reading's total (by time); when there is no previous
 * reading, or the total went down (a replaced or reset meter), or totals are absent, it consumes
 * its own interval volume. After a gap the whole total difference, the gap's consumption
 * included, belongs to the bucket where data resumes (`gap` is then true).
 */
export interface ConsumptionRow {
  start: Date
  waterMl: number | null
  energyWh: number | null
  /** Reverse flow in the bucket: the sum of the interval amounts (there is no reverse total). */
  reverseMl: number | null
  readings: number
  gap: boolean
}

/** The fleet's consumption query; with a district, only that district's meters (UTC days only). */
export interface FleetConsumptionQuery extends ConsumptionQuery {
  /** A district (meters' locations); '' for meters without one. Needs bucket day on UTC days. */
  district?: string
}

/** The whole fleet's consumption in one bucket: every meter's, summed. */
export interface FleetConsumptionRow extends ConsumptionRow {
  /** Meters with readings in the bucket. */
  meters: number
}

/** What Store.maintainReadings did: partitions made ahead, partitions (or chunks) dropped, rows and blocks deleted. */
export interface ReadingsMaintenance {
  created: string[]
  dropped: string[]
  deletedRows: number
  deletedBlocks: number
}

export interface LatestQuery {
  /** Keyset pagination: meters with an id greater than this. */
  after?: string
  limit?: number
}

/** Bytes of a rejected payload kept in the dead letter; the rest is described by size and SHA-256. */
export const DEAD_LETTER_HEAD_BYTES = 512

export interface DeadLetter {
  topic: string
  meterId: string | null
  reason: string
  detail: string
  /** The whole payload as received; the store keeps its first DEAD_LETTER_HEAD_BYTES, size and SHA-256. */
  payload: Uint8Array
  /** A conflict (same frame id, other content): the SHA-256 (hex) stored first (a ledger block's: 16 digits). */
  storedSha256?: string
}

export interface DeadLetterRow {
  id: number
  receivedAt: Date
  topic: string
  meterId: string | null
  reason: string
  detail: string
  /** The payload's first DEAD_LETTER_HEAD_BYTES bytes. */
  payloadHead: Uint8Array
  /** Size of the whole payload in bytes. */
  payloadBytes: number
  /** SHA-256 (hex) of the whole payload. */
  payloadSha256: string
  storedSha256: string | null
}

export interface DeadLetterQuery {
  /** Keyset pagination, newest first: dead letters with an id below this. */
  beforeId?: number
  limit?: number
}

/** Dead-letter retention: keep at most maxRows, none older than maxAgeS. */
export interface DeadLetterRetention {
  maxRows: number
  maxAgeS: number
}

export interface ReadingQuery {
  from?: Date
  to?: Date
  limit?: number
}

/** A frame to claim in the ledger within an ingest batch. */
export interface LedgerEntry extends FrameKey {
  kind: "readings" | "alarm"
  at: Date
}

/**
 * The writes of one ingest batch, all in one transaction (Store.ingestBatch): none is visible,
 * and no frame of the batch is acknowledged, before all of them commit. Each bulk method is one
 * statement whatever the number of frames.
 */
export interface IngestTx {
  /** The rows of those meters that exist. */
  getMeters(meterIds: string[]): Promise<Map<string, MeterRow>>
  /** Registers the meters not known yet (first_seen = firstAt) and advances every last_seen to lastAt. */
  touchMeters(touches: { meterId: string; firstAt: Date; lastAt: Date }[]): Promise<void>
  recordBirth(meterId: string, birth: BirthInfo, at: Date): Promise<void>
  recordDeath(meterId: string, boot: number, at: Date): Promise<boolean>
  /** For a frame of a meter marked inactive: online again, INACTIVE cleared once; whether this call cleared it. */
  markActive(meterId: string, at: Date): Promise<boolean>
  setSeal(meterId: string, seal: Partial<MeterSeal>): Promise<boolean>
  /**
   * Claims the frames in the ledger, with the outcome each would have had claimed one by one in
   * this order: a later entry with the (meter, boot, seq) of an earlier one is its duplicate (same
   * hash) or conflict (other hash).
   */
  claimFrames(frames: LedgerEntry[]): Promise<FrameOutcome[]>
  /** Interval readings of claimed frames; meter_latest follows the newest of each meter. */
  writeReadings(rows: ReadingRow[]): Promise<void>
  /** Alarm edges of claimed frames. */
  writeAlarms(events: AlarmEvent[]): Promise<void>
  /** Raises a bridge alarm of `type` unless one is open on the meter; whether it raised one. */
  raiseBridgeAlarm(meterId: string, type: string, value: number, at: Date): Promise<boolean>
  addDeadLetters(letters: { letter: DeadLetter; at: Date }[]): Promise<void>
}

export interface Store extends RolloutStore, LinkKeyStore, BulkReadStore, CompactionStore, LedgerStore, DmaStore {
  readonly engine: string
  /** Applies the schema steps not applied yet (store/migrations.ts); returns their versions. */
  migrate(): Promise<number[]>
  getMeter(meterId: string): Promise<MeterRow | undefined>
  listMeters(): Promise<MeterRow[]>
  /** Every meter id, in meter id order (the bulk export's order, BulkReadStore). */
  meterIds(): Promise<string[]>
  /** The earliest first_seen of any meter; null when there is none (the export index starts there). */
  firstSeen(): Promise<Date | null>
  /**
   * A death (the meter's last will) of `boot`: marks the meter offline unless it was born again
   * since (its last birth has a later boot), as Sparkplug's bdSeq does. Returns whether it applied.
   */
  recordDeath(meterId: string, boot: number, at: Date): Promise<boolean>
  /**
   * Runs one ingest batch's writes in one transaction; commits when fn resolves (durably: the
   * embedded engine syncs its WAL as PostgreSQL does). Rolls back, writing nothing, when it throws.
   */
  ingestBatch<T>(fn: (tx: IngestTx) => Promise<T>): Promise<T>
  readings(meterId: string, q?: ReadingQuery): Promise<ReadingRow[]>
  /** The newest reading of every meter (by ts), from a table kept on insert: never scans readings. */
  latest(q?: LatestQuery): Promise<ReadingRow[]>
  /** The newest reading of each of these meters that has one (from meter_latest), by meter id. */
  latestOf(meterIds: string[]): Promise<ReadingRow[]>
  /**
   * The same rows as latest(), serialised by the engine as a JSON array of API readings (meterId,
   * ts as ISO 8601 UTC, the other fields as in ReadingRow): at 100k meters, parsing rows into
   * objects and back into JSON in Node costs more than the query.
   */
  latestJson(q?: LatestQuery): Promise<{ json: string; count: number; last: string | null }>
  /** By hour, day or month from the rollups (store/rollups.ts) when the range allows; by 15 minutes from readings. */
  consumption(meterId: string, q: ConsumptionQuery): Promise<ConsumptionRow[]>
  /** The fleet's consumption by hour, day or month; undefined when from/to or the tz are not on whole hours. */
  fleetConsumption(q: FleetConsumptionQuery): Promise<FleetConsumptionRow[] | undefined>
  /**
   * Makes readings' partitions ahead (this month and the next two); with retentionDays, drops the
   * readings older than that, by whole partitions and whole blocks (a month goes once all of it is
   * older). Rollups are kept.
   */
  maintainReadings(now: Date, retentionDays?: number): Promise<ReadingsMaintenance>
  alarms(q?: AlarmQuery): Promise<AlarmRow[]>
  /**
   * Marks offline and inactive every meter with a birth config whose last frame is older than
   * 2 × interval_s × batch + slackS at `now`, raising one INACTIVE alarm per meter (exactly once,
   * also with several bridges checking). Returns the meters it marked.
   */
  checkInactivity(now: Date, slackS: number): Promise<string[]>
  countOnline(): Promise<number>
  fleetCounts(): Promise<FleetCounts> // the fleet's gauges, counted at a scrape (metrics.ts)
  /** Engine features found by migrate(): readings is a TimescaleDB hypertable, or partitioned by month. */
  readonly features: { hypertable: boolean; partitioned: boolean }
  /** Newest first, keyset-paged by id. */
  deadLetters(q?: DeadLetterQuery): Promise<DeadLetterRow[]>
  /** Deletes dead letters beyond the retention; returns how many. */
  pruneDeadLetters(r: DeadLetterRetention, now: Date): Promise<number>
  /**
   * Registers a provisioned meter (the registry: production bridges accept frames only from
   * registered meters). Returns true when it was new.
   */
  registerMeter(meterId: string, at: Date, seal?: Partial<MeterSeal>): Promise<boolean>
  /**
   * Sets a registered meter's sealing policy and keys (provisioning, import, rotation). Returns
   * false when the meter is unknown.
   */
  setSeal(meterId: string, seal: Partial<MeterSeal>): Promise<boolean>
  /** Sets (or with null clears) a meter's location. Returns false when the meter is unknown. */
  setLocation(meterId: string, location: MeterLocation | null): Promise<boolean>
  /**
   * Acknowledges an alarm edge once: the first acknowledgement is kept (created true), a later one
   * returns it (created false). Undefined when no such edge exists.
   */
  ackAlarm(key: AlarmKey, ack: AlarmAck): Promise<{ ack: AlarmAck; created: boolean } | undefined>
  /** Per district: meters, online meters, open alarms, and consumption of readings in [from, to). */
  districts(q: { from?: Date; to?: Date }): Promise<DistrictRow[]>
  /** Dead letters kept now. */
  countDeadLetters(): Promise<number>
  /** One read-only SELECT of the SensorThings view (bridge/src/sta/): fixed fragments, values as $n. */
  readView(sql: string, params: unknown[]): Promise<Record<string, unknown>[]>
  ping(): Promise<void>
  close(): Promise<void>
}
