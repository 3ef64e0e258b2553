// Prometheus metrics of one bridge instance (its own registry, so tests can run several).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client"

export function createMetrics(defaults = false) {
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
      help: "Data tier write latency per frame",
      registers: [registry],
      buckets: [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3],
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
    onlineMeters: new Gauge({
      name: "citymeter_meters_online",
      help: "Meters whose last birth/death says online",
      registers: [registry],
    }),
  }
  return m
}

export type Metrics = ReturnType<typeof createMetrics>
