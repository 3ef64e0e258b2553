// One SQL implementation of Store for every PostgreSQL-compatible engine, composed of the store's
// rooms: writes.ts (a batch's writes), readings.ts and consumption.ts (reads), registry.ts
// (meters, alarms, dead letters), partitions.ts and migrations.ts (the schema). All statements
// are parameterised ($1...); identifiers never come from input.
import * as consumptionReads from "./consumption.js"
import { planCost, ReadCostError, type Db } from "./db.js"
import type { CompactionOptions } from "./compaction-store.js"
import { compactReadings } from "./compaction.js"
import * as dmaReads from "./dma-balance.js"
import { dmaApparentLosses } from "./dma-losses.js"
import { dmaPressure } from "./dma-pressure.js"
import * as dmas from "./dmas.js"
import { exportLines, type ExportFormat } from "./export-rows.js"
import { compactLedger, type CompactLedgerOptions } from "./ledger-blocks.js"
import { shrinkLedgerIndex } from "./ledger-index.js"
import { migrate } from "./migrations.js"
import { ensurePartitions, isPartitioned, maintainReadings, type PartitionState } from "./partitions.js"
import { readingColumns } from "./reading-columns.js"
import * as readingReads from "./readings.js"
import * as registry from "./registry.js"
import * as releases from "./releases.js"
import * as rollouts from "./rollouts.js"
import type {
  AlarmAck,
  AlarmKey,
  AlarmQuery,
  ConsumptionQuery,
  DeadLetterQuery,
  DeadLetterRetention,
  FleetConsumptionQuery,
  IngestTx,
  LatestQuery,
  MeterLocation,
  MeterSeal,
  ReadingQuery,
  Store,
} from "./store.js"
import { SqlWrites } from "./writes.js"

export class SqlStore implements Store {
  readonly features = { hypertable: false, partitioned: false }
  private readonly parts: PartitionState = { partitioned: false, months: new Set() }
  /** Single statements outside a batch: the same SQL as a batch's. */
  private readonly writes: SqlWrites

  constructor(
    readonly engine: string,
    /** The engine's connection; public for tools (benchmarks seed with it), not for the API. */
    readonly db: Db,
  ) {
    this.writes = new SqlWrites(db, this.parts)
  }

  /**
   * READ_MAX_COST: a SensorThings statement the planner costs above this is refused before it
   * runs (0: no limit). PGlite cannot stop a statement without reopening the database, so a full
   * scan it can foresee is better refused than stopped.
   */
  readMaxCost = 0

  /** The open API's reads: apart from ingest, under their budget (Db.reads). */
  private get reader(): Db {
    return this.db.reads ?? this.db
  }

  /** Runs the schema steps not applied yet (store/migrations.ts); returns their versions. */
  async migrate() {
    const applied = await migrate(this.db, this.engine)
    this.features.hypertable = await this.db
      .query(
        `SELECT 1 FROM timescaledb_information.hypertables
         WHERE hypertable_name = 'readings' AND hypertable_schema = current_schema()`,
      )
      .then((r) => r.rows.length > 0)
      .catch(() => false)
    this.features.partitioned = this.parts.partitioned = await isPartitioned(this.db)
    await this.maintainReadings(new Date())
    return applied
  }

  /** Partitions of readings for every month in [from, to), for tools that write readings with their own SQL. */
  async ensurePartitions(from: Date, to: Date) {
    if (this.parts.partitioned) await ensurePartitions(this.db, from, to)
  }

  maintainReadings(now: Date, retentionDays?: number) {
    return maintainReadings(this.db, { ...this.parts, hypertable: this.features.hypertable }, now, retentionDays)
  }

  // PGlite's one connection serves ingest too: fewer meter-months per transaction there
  compactReadings = (before: Date, opts?: CompactionOptions) =>
    compactReadings(this.db, before, { metersPerTx: this.engine === "pglite" ? 5 : 50, ...opts })

  async ingestBatch<T>(fn: (tx: IngestTx) => Promise<T>): Promise<T> {
    try {
      return await this.db.transaction((tx) => fn(new SqlWrites(tx, this.parts)))
    } catch (e) {
      // partitions made in a rolled-back batch are gone again (and one may have been dropped elsewhere)
      this.parts.months.clear()
      throw e
    }
  }

  recordDeath(meterId: string, boot: number, at: Date) {
    return this.writes.recordDeath(meterId, boot, at)
  }

  setSeal(meterId: string, seal: Partial<MeterSeal>) {
    return this.writes.setSeal(meterId, seal)
  }

  // the registry: writes and the bridge's own reads on the ingest connection, the API's on the reader
  getMeter = (meterId: string) => registry.getMeter(this.db, meterId)
  listMeters = () => registry.listMeters(this.reader)
  meterIds = () => registry.meterIds(this.reader)
  firstSeen = () => registry.firstSeen(this.reader)
  registerMeter = (meterId: string, at: Date, seal?: Partial<MeterSeal>) =>
    registry.registerMeter(this.db, meterId, at, seal)
  setLocation = (meterId: string, l: MeterLocation | null) => registry.setLocation(this.db, meterId, l)
  linkKey = (meterId: string) => registry.linkKey(this.db, meterId)
  setLinkKey = (meterId: string, key: Uint8Array | null) => registry.setLinkKey(this.db, meterId, key)
  countOnline = () => registry.countOnline(this.db)
  fleetCounts = () => registry.fleetCounts(this.reader)
  checkInactivity = (now: Date, slackS: number) => registry.checkInactivity(this.db, now, slackS)
  districts = (q: { from?: Date; to?: Date }) => registry.districts(this.reader, q)
  alarms = (q?: AlarmQuery) => registry.alarms(this.reader, q)
  ackAlarm = (key: AlarmKey, ack: AlarmAck) => registry.ackAlarm(this.db, key, ack)
  deadLetters = (q?: DeadLetterQuery) => registry.deadLetters(this.reader, q)
  countDeadLetters = () => registry.countDeadLetters(this.reader)
  pruneDeadLetters = (r: DeadLetterRetention, now: Date) => registry.pruneDeadLetters(this.db, this.engine, r, now)

  // releases (issue 23): registered on the ingest connection, read by the API's reader
  addRelease = (r: releases.NewRelease, at: Date) => releases.addRelease(this.db, r, at)
  listReleases = (q?: releases.ReleaseQuery) => releases.listReleases(this.reader, q)
  getRelease = (id: number) => releases.getRelease(this.reader, id)
  releaseBytecode = (id: number) => releases.releaseBytecode(this.reader, id)

  // rollouts (issue 23): the runner's reads and writes on the ingest connection, the API's reads on the reader
  createRollout = (r: rollouts.NewRollout, m: { meterId: string; stage: number }[], at: Date) =>
    rollouts.createRollout(this.db, r, m, at)
  listRollouts = (limit?: number) => rollouts.listRollouts(this.reader, limit)
  getRollout = (id: number) => rollouts.getRollout(this.db, id)
  rolloutsIn = (states: rollouts.RolloutState[]) => rollouts.rolloutsIn(this.db, states)
  rolloutMeters = (id: number, q?: Parameters<typeof rollouts.rolloutMeters>[2]) =>
    rollouts.rolloutMeters(this.db, id, q)
  setRolloutState = (
    id: number,
    from: rollouts.RolloutState[],
    to: rollouts.RolloutState,
    why: string | null,
    at: Date,
  ) => rollouts.setRolloutState(this.db, id, from, to, why, at)
  advanceStage = (id: number, from: number, at: Date) => rollouts.advanceStage(this.db, id, from, at)
  updateRolloutMeter = (
    id: number,
    meterId: string,
    from: rollouts.MeterUpdateState[],
    p: rollouts.MeterPatch,
    at: Date,
  ) => rollouts.updateRolloutMeter(this.db, id, meterId, from, p, at)
  releaseBySha = (board: string, sha256: string) => rollouts.releaseBySha(this.db, board, sha256)

  // district metered areas (issue 25): written on the ingest connection, balances read by the API's reader
  putDma = (d: dmas.DmaInput, at: Date) => dmas.putDma(this.db, d, at)
  listDmas = () => dmas.listDmas(this.reader)
  getDma = (dmaId: string) => dmas.getDma(this.reader, dmaId)
  deleteDma = (dmaId: string) => dmas.deleteDma(this.db, dmaId)
  dmaMembers = (dmaId: string) => dmas.dmaMembers(this.reader, dmaId)
  dmaBalance = (q: dmaReads.DmaBalanceQuery) => dmaReads.dmaBalance(this.reader, q)
  dmaNightFlow = (q: dmaReads.NightFlowQuery) => dmaReads.dmaNightFlow(this.reader, q)
  dmaApparentLosses = (q: dmaReads.ApparentLossQuery) => dmaApparentLosses(this.reader, q)
  dmaPressure = (q: dmaReads.DmaPressureQuery) => dmaPressure(this.reader, q)
  setBridgeAlarm = (meterId: string, type: string, active: boolean, value: number, at: Date) =>
    dmas.setBridgeAlarm(this.db, meterId, type, active, value, at)

  readings = (meterId: string, q?: ReadingQuery) => readingReads.readings(this.reader, meterId, q)
  readingColumns = (meterId: string, q?: ReadingQuery) => readingColumns(this.reader, meterId, q)
  latest = (q?: LatestQuery) => readingReads.latest(this.reader, q)
  latestOf = (meterIds: string[]) => readingReads.latestOf(this.reader, meterIds)
  latestJson = (q?: LatestQuery) => readingReads.latestJson(this.reader, q)
  exportLines = (from: Date, to: Date, format: ExportFormat, batch?: number) =>
    exportLines(this.reader, from, to, format, batch)

  // the frame ledger's compaction (issue 24 item 2), on the ingest connection: it moves rows; then
  // its key index rebuilt where the move left it mostly empty pages (ledger-index.ts)
  compactLedger = async (before: Date, opts?: CompactLedgerOptions) => {
    const done = await compactLedger(this.db, before, opts)
    if (!done.frames) return done
    const index = await shrinkLedgerIndex(this.db, this.engine === "pglite" ? "pglite" : "postgres")
    return index.rebuilt ? { ...done, indexRebuilt: { before: index.before, after: index.after } } : done
  }

  consumption = (meterId: string, q: ConsumptionQuery) => consumptionReads.consumption(this.reader, meterId, q)
  fleetConsumption = (q: FleetConsumptionQuery) => consumptionReads.fleetConsumption(this.reader, q)
  /** Public for tests and benchmarks, which compare the district days to it. */
  fleetConsumptionByMeter = (q: ConsumptionQuery) => consumptionReads.fleetConsumptionByMeter(this.reader, q)
  /** Public for tests and benchmarks, which compare the rollups to it. */
  consumptionFromReadings = (meterId: string, q: ConsumptionQuery) =>
    consumptionReads.consumptionFromReadings(this.reader, meterId, q)

  async readView(sql: string, params: unknown[]) {
    if (this.readMaxCost > 0) {
      const cost = await planCost(this.reader, sql, params)
      if (cost > this.readMaxCost) throw new ReadCostError(cost, this.readMaxCost)
    }
    return (await this.reader.query(sql, params)).rows
  }

  async ping() {
    await this.db.query(`SELECT 1`)
  }

  async close() {
    await this.db.close()
  }
}
