// Prometheus metrics of one bridge instance (its own registry, so tests can run several).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client"

/** What the ingest health gauges read when Prometheus scrapes (set by service.ts). */
export type HealthSource = () => { oldestUnackedS: number; stalled: boolean }

/** Counts the meters online in the data tier (set by service.ts); read at every scrape. */
export type OnlineSource = () => Promise<number>

/** The fleet as the data tier sees it (Store.fleetCounts), read at every scrape. */
export interface FleetCounts {
  /** Meters registered. */
  meters: number
  /** Meters marked inactive: they missed their expected frames (an INACTIVE alarm is open). */
  inactive: number
  /** Sum over meters of the frames their last birth said they had dropped (proto Birth.dropped). */
  dropped: number
  /** Meters whose last birth said their settings store refused writes (proto Birth.unstored > 0). */
  unstored: number
}

/** The filesystem that holds the embedded engine's data directory (fs.statfs), read at every scrape. */
export type DiskSource = () => Promise<{ path: string; freeBytes: number; sizeBytes: number } | undefined>

export function createMetrics(defaults = false) {
  let fleet: (() => Promise<FleetCounts>) | undefined
  let disk: DiskSource | undefined
  let health: HealthSource = () => ({ oldestUnackedS: 0, stalled: false })
  let online: OnlineSource | undefined
  let deadLetterCount: () => Promise<number> = async () => 0
  const registry = new Registry()
  if (defaults) collectDefaultMetrics({ register: registry })
  const m = {
    registry,
    framesIn: new Counter({
      name: "citymeter_frames_received_total",
      help: "Uplink messages received",
      registers: [registry],
      labelNames: ["kind"],
    }),
    framesRejected: new Counter({
      name: "citymeter_frames_rejected_total",
      help: "Uplink messages rejected, by reason code",
      registers: [registry],
      labelNames: ["reason"],
    }),
    framesStored: new Counter({
      name: "citymeter_frames_stored_total",
      help: "Frames committed to the data tier",
      registers: [registry],
      labelNames: ["kind"],
    }),
    framesDuplicate: new Counter({
      name: "citymeter_frames_duplicate_total",
      help: "Frames received again after they were stored (acked, not stored twice)",
      registers: [registry],
    }),
    readingsStored: new Counter({
      name: "citymeter_readings_stored_total",
      help: "Interval readings committed",
      registers: [registry],
    }),
    storeErrors: new Counter({
      name: "citymeter_store_errors_total",
      help: "Data tier operations that failed and were retried",
      registers: [registry],
    }),
    storeLatency: new Histogram({
      name: "citymeter_store_seconds",
      help: "Data tier write latency per ingest batch (one transaction)",
      registers: [registry],
      buckets: [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3],
    }),
    batchFrames: new Histogram({
      name: "citymeter_ingest_batch_frames",
      help: "Frames per ingest batch (one transaction, acknowledged after its commit)",
      registers: [registry],
      buckets: [1, 2, 5, 10, 50, 100, 250, 500, 1000, 2000],
    }),
    ingestLag: new Histogram({
      name: "citymeter_ingest_lag_seconds",
      help: "Commit time minus the end of the newest interval in the frame",
      registers: [registry],
      buckets: [0.1, 0.5, 1, 5, 30, 120, 900, 3600, 86400],
    }),
    clockCorrections: new Counter({
      name: "citymeter_clock_corrections_total",
      help: "TimeSync downlinks pushed to meters whose frames showed a skewed clock",
      registers: [registry],
    }),
    deadLetterFailures: new Counter({
      name: "citymeter_dead_letter_failures_total",
      help: "Rejected frames whose dead letter the data tier refused (logged, then dropped)",
      registers: [registry],
    }),
    readingsCompacted: new Counter({
      name: "citymeter_readings_compacted_total",
      help: "Readings moved from rows into per-meter month blocks by compaction (READINGS_HOT_DAYS)",
      registers: [registry],
    }),
    blocksWritten: new Counter({
      name: "citymeter_reading_blocks_written_total",
      help: "Meter-month blocks written by compaction; merged: a late frame's month compacted before",
      labelNames: ["kind"] as const,
      registers: [registry],
    }),
    deadLettersPruned: new Counter({
      name: "citymeter_dead_letters_pruned_total",
      help: "Dead letters deleted by retention (DEAD_LETTER_MAX_ROWS, DEAD_LETTER_MAX_AGE_DAYS)",
      registers: [registry],
    }),
    downlinks: new Counter({
      name: "citymeter_downlinks_total",
      help: "Downlinks to meters (ack, time, config) by outcome: sent (acks: written at QoS 0; others: PUBACKed by the broker) or failed (the meter resends what an ack missed)",
      labelNames: ["kind", "outcome"] as const,
      registers: [registry],
    }),
    readsShed: new Counter({
      name: "citymeter_reads_shed_total",
      help: "Expensive reads answered 503 CM_ERR_BUSY because their gate's queue was full (READ_QUEUE)",
      labelNames: ["gate"] as const,
      registers: [registry],
    }),
    bootRegressions: new Counter({
      name: "citymeter_boot_regressions_total",
      help: "Births of a new life: boot lower than the meter's last or more than 10,000 above it (re-flash or settings wipe)",
      registers: [registry],
    }),
    httpShed: new Counter({
      name: "citymeter_http_shed_total",
      help: "HTTP clients turned away or dropped by a cap, by reason: connections (503 past HTTP_MAX_CONNECTIONS), live_clients (503 past LIVE_MAX_CLIENTS), live_slow (an event stream closed: its unread events outgrew LIVE_MAX_BUFFER_BYTES), device_log_streams (503 past the device log streams at once)",
      labelNames: ["reason"] as const,
      registers: [registry],
    }),
    brokerRetainedRefused: new Counter({
      name: "citymeter_broker_retained_refused_total",
      help: "Retained messages the embedded broker delivered but did not keep, by reason: too_large (over EMBEDDED_MQTT_MAX_RETAINED_BYTES) or outside_tree (not under citymeter/v1/)",
      labelNames: ["reason"] as const,
      registers: [registry],
    }),
    brokerRefused: new Counter({
      name: "citymeter_broker_refused_total",
      help: "What the embedded broker refused under its password file, by reason: login (anonymous or a wrong password), client_id (a login connecting under another login's client id), publish and subscribe (outside the login's topics)",
      labelNames: ["reason"] as const,
      registers: [registry],
    }),
    wsskLinksUp: new Gauge({
      name: "citymeter_wssk_links_up",
      help: "Meters with an authenticated WSSK link to this bridge's endpoint (WSSK_PORT)",
      registers: [registry],
    }),
    wsskAuthFailures: new Counter({
      name: "citymeter_wssk_auth_failures_total",
      help: "WSSK links refused, by reason: unknown_meter, no_key (the meter has no link key), bad_auth (its auth did not open under the key), closed (the device left before its auth), timeout, protocol, busy (WSSK_MAX_LINKS, or a handshake of the meter under way)",
      labelNames: ["reason"] as const,
      registers: [registry],
    }),
    wsskDeployedBytes: new Counter({
      name: "citymeter_wssk_deployed_bytes_total",
      help: "Program bytes meters acknowledged over WSSK deploys (0x95 chunks)",
      registers: [registry],
    }),
    rolloutMeters: new Counter({
      name: "citymeter_rollout_meters_total",
      help: "Meters that ended a rollout, by outcome: done (the hash and the next Birth were the release's), rolled_back (the previous release is back), failed, skipped",
      labelNames: ["outcome"] as const,
      registers: [registry],
    }),
    rolloutInFlight: new Gauge({
      name: "citymeter_rollout_in_flight",
      help: "Meters with an update in hand: transferring, verifying or rolling back",
      registers: [registry],
    }),
    rolloutHalted: new Counter({
      name: "citymeter_rollouts_halted_total",
      help: "Rollouts that stopped at a stage by themselves (a meter rolled back, or failed after its deploy began)",
      registers: [registry],
    }),
    rolloutDeploySeconds: new Histogram({
      name: "citymeter_rollout_deploy_seconds",
      help: "One meter's program transfer over WSSK, from its deploy start to the runtime's matching hash",
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [registry],
    }),
    deviceLogStreams: new Gauge({
      name: "citymeter_device_log_streams",
      help: "GET /meters/:id/device-log streams open: meters' device logs streamed over their WSSK links",
      registers: [registry],
    }),
    deviceLogLines: new Counter({
      name: "citymeter_device_log_lines_total",
      help: "Device log lines sent to GET /meters/:id/device-log streams",
      registers: [registry],
    }),
    oldestUnacked: new Gauge({
      name: "citymeter_ingest_oldest_unacked_seconds",
      help: "Age of the oldest uplink received and not yet acknowledged to the broker",
      registers: [registry],
      collect() {
        this.set(health().oldestUnackedS)
      },
    }),
    stalled: new Gauge({
      name: "citymeter_ingest_stalled",
      help: "1 while ingest is stalled (a frame in hand too long, the data tier failing, or no subscription)",
      registers: [registry],
      collect() {
        this.set(health().stalled ? 1 : 0)
      },
    }),
    setHealthSource(source: HealthSource) {
      health = source
    },
    setOnlineSource(source: OnlineSource) {
      online = source
    },
    // counted when read, so a birth or death shows at the next scrape, not the next inactivity
    // check; the value set by that check stays when the data tier does not answer
    deadLetters: new Gauge({
      name: "citymeter_dead_letters",
      help: "Dead letters kept in the data tier (GET /dead-letters), counted when scraped",
      registers: [registry],
      async collect() {
        this.set(await deadLetterCount().catch(() => NaN))
      },
    }),
    setDeadLetterSource(source: () => Promise<number>) {
      deadLetterCount = source
    },
    onlineMeters: new Gauge({
      name: "citymeter_meters_online",
      help: "Meters whose last birth/death says online",
      registers: [registry],
      async collect() {
        if (!online) return
        try {
          this.set(await online())
        } catch {
          // data tier down: /readyz and citymeter_ingest_stalled report it
        }
      },
    }),
    setFleetSource(source: () => Promise<FleetCounts>) {
      fleet = source
    },
    setDiskSource(source: DiskSource) {
      disk = source
    },
    // the four fleet gauges share one query per scrape: the first to collect starts it
    fleetMeters: fleetGauge("citymeter_meters", "Meters registered in the data tier, counted when scraped", "meters"),
    fleetInactive: fleetGauge(
      "citymeter_meters_inactive",
      "Meters marked inactive (missed their expected frames; an INACTIVE alarm is open), counted when scraped",
      "inactive",
    ),
    fleetDropped: fleetGauge(
      "citymeter_meters_dropped_frames",
      "Frames the meters' last births said their queues had dropped (proto Birth.dropped), summed over meters when scraped",
      "dropped",
    ),
    fleetUnstored: fleetGauge(
      "citymeter_meters_unstored",
      "Meters whose last birth said their settings store refused writes (proto Birth.unstored > 0: frames in RAM only), counted when scraped",
      "unstored",
    ),
    dataDirFree: new Gauge({
      name: "citymeter_data_dir_free_bytes",
      help: "Bytes free to the bridge on the filesystem of the embedded engine's data directory (pglite:<dir> only; no sample otherwise)",
      labelNames: ["path"] as const,
      registers: [registry],
      async collect() {
        await diskCollect(this, "freeBytes")
      },
    }),
    dataDirSize: new Gauge({
      name: "citymeter_data_dir_size_bytes",
      help: "Size of the filesystem of the embedded engine's data directory (pglite:<dir> only; no sample otherwise)",
      labelNames: ["path"] as const,
      registers: [registry],
      async collect() {
        await diskCollect(this, "sizeBytes")
      },
    }),
  }
  let fleetRead: { at: number; counts: Promise<FleetCounts | undefined> } | undefined
  function fleetGauge(name: string, help: string, key: keyof FleetCounts) {
    return new Gauge({
      name,
      help,
      registers: [registry],
      async collect() {
        if (!fleet) return
        const now = Date.now()
        // one read serves the gauges of one scrape (they collect within the same few ms)
        if (!fleetRead || now - fleetRead.at > 1000) fleetRead = { at: now, counts: fleet().catch(() => undefined) }
        const counts = await fleetRead.counts
        // data tier down: the last value stays; /readyz and citymeter_ingest_stalled report it
        if (counts) this.set(counts[key])
      },
    })
  }
  async function diskCollect(g: Gauge<"path">, key: "freeBytes" | "sizeBytes") {
    if (!disk) return
    const d = await disk().catch(() => undefined)
    if (d) g.set({ path: d.path }, d[key])
  }
  return m
}

export type Metrics = ReturnType<typeof createMetrics>

/** The WSSK endpoint's counts (wssk/endpoint.ts) into these metrics. */
export const wsskMetrics = (m: Metrics) => ({
  linkUp: (delta: 1 | -1) => m.wsskLinksUp.inc(delta),
  authFailure: (reason: string) => m.wsskAuthFailures.inc({ reason }),
  deployed: (bytes: number) => m.wsskDeployedBytes.inc(bytes),
})

/**
 * An API-only process (MODE=api) exports no ingest metrics: it has no frames, batches or jobs, and
 * its zeros beside the ingest process's figures would read as an idle ingest. Kept: the process's
 * own, downlinks (the API sends them) and whatever the routes count.
 */
export function withoutIngestMetrics(m: Metrics): Metrics {
  const ingestOnly = [
    m.framesIn,
    m.framesRejected,
    m.framesStored,
    m.framesDuplicate,
    m.readingsStored,
    m.storeErrors,
    m.storeLatency,
    m.batchFrames,
    m.ingestLag,
    m.clockCorrections,
    m.deadLetterFailures,
    m.deadLettersPruned,
    m.readingsCompacted,
    m.blocksWritten,
    m.bootRegressions,
    m.oldestUnacked,
    m.stalled,
    m.deadLetters,
    m.onlineMeters,
    m.fleetMeters,
    m.fleetInactive,
    m.fleetDropped,
    m.fleetUnstored,
    m.dataDirFree,
    m.dataDirSize,
  ]
  for (const metric of ingestOnly) m.registry.removeSingleMetric((metric as unknown as { name: string }).name)
  return m
}
