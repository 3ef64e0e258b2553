// Every default of the bridge, in one place. config.ts reads the environment over these
// (configFromEnv) and falls back to them when a ServiceConfig leaves a field out; ingest, the
// bridge's MQTT client and the routes take theirs from here too. The README's Configuration table
// lists the variables (tests/unit/defaults.test.ts checks that its defaults are these).

export const BRIDGE_DEFAULTS = {
  /** MODE: what one process runs (bridge/src/roles.ts): the API and ingest together. */
  role: "all",
  /** LOG_LEVEL: pino's level (bridge/src/log.ts); LOG_FORMAT unset chooses by the terminal. */
  logLevel: "info",
  /** EMBEDDED_MQTT_PORT: the embedded broker's port when MQTT_URL is unset. */
  embeddedMqttPort: 11883,
  /**
   * EMBEDDED_MQTT_MAX_RETAINED_BYTES: the largest retained message the embedded broker keeps
   * (citymeter retains nothing; 5 × 50 MB retained on junk/* once added 280 MB RSS). Retained
   * messages outside citymeter/v1/ are never kept.
   */
  embeddedMqttMaxRetainedBytes: 65_536,
  /** DATABASE_URL: the durable embedded engine in ./data. */
  databaseUrl: "pglite:./data/pglite",
  /** HTTP_PORT, HTTP_HOST: the API listener. */
  httpPort: 8080,
  httpHost: "127.0.0.1",
  /**
   * What clients of the HTTP API may hold (README "Configuration"). HTTP_MAX_CONNECTIONS: past it a
   * new connection's requests answer 503 CM_ERR_BUSY with Retry-After and the connection is
   * closed; past twice it Node closes new connections at once (20,000 half-open sockets had taken
   * every file descriptor). HTTP_IDLE_TIMEOUT_MS: a connection with no traffic either way (a client
   * that stopped reading) is closed; HTTP_HEADERS_TIMEOUT_MS, HTTP_REQUEST_TIMEOUT_MS: the most a
   * client may take to send a request's headers, and all of it; HTTP_KEEP_ALIVE_TIMEOUT_MS: how long
   * an idle keep-alive connection stays open (fastify's default, above the 60 s of common load
   * balancers). LIVE_MAX_CLIENTS: GET /events streams at once (1,000 clients pulled 3 GB in 30 s);
   * LIVE_MAX_BUFFER_BYTES: a stream whose unread events outgrow this is closed (the page reconnects
   * and reloads), not buffered without limit.
   */
  http: {
    maxConnections: 1000,
    idleTimeoutMs: 120_000,
    headersTimeoutMs: 10_000,
    requestTimeoutMs: 30_000,
    keepAliveTimeoutMs: 72_000,
    liveMaxClients: 100,
    liveMaxBufferBytes: 1_048_576,
  },
  /** MQTT_CONSUMERS: MQTT clients (ingest pipelines) in one process. */
  consumers: 1,
  /** The shared-subscription group several consumers in one process use when MQTT_SHARE_GROUP is unset. */
  consumersShareGroup: "citymeter",
  /**
   * INGEST_BATCH_FRAMES (bench/README.md measures the bounds). A backlog drains in batches of
   * about 1000 frames (4000 readings, one COPY of 30–60 ms on PostgreSQL here); 250 or 4000
   * drained no differently within the noise of this machine. The broker's in-flight window
   * (deploy/mosquitto) holds two.
   */
  batchMaxFrames: 1000,
  /**
   * INGEST_BATCH_MS: a short window: under light load a batch waits at most 2 ms for company (at
   * 1,000 frames/s, batches of a few frames; publish → commit p50 ≈ 13 ms on PostgreSQL, most of
   * it the commit).
   */
  batchWindowMs: 2,
  /** Two lanes on PostgreSQL: one builds its batch (Node) while the other's statements run. PGlite: 1. */
  lanes: 2,
  /**
   * On SIGTERM, how long ingest may take to commit and acknowledge the frames in hand, ms; what is
   * still in hand then is left unacknowledged (the broker's session or the meter sends it again).
   * Below the 30 s a supervisor (Kubernetes, systemd) usually waits before SIGKILL.
   */
  drainMs: 10_000,
  /** First delay before a failed data-tier operation is tried again, ms; it grows by as much each time. */
  retryMs: 200,
  /** The longest delay between two tries of a data-tier operation, ms. */
  retryMaxMs: 5000,
  /** INGEST_STALL_S × 1000: a frame waiting this long for its commit, or a data tier failing as long, is a stall. */
  stallMs: 10_000,
  /** DEAD_LETTER_MAX_ROWS, DEAD_LETTER_MAX_AGE_DAYS × 86400: dead-letter retention. */
  deadLetterRetention: { maxRows: 100_000, maxAgeS: 30 * 86400 },
  /** How often dead-letter retention runs, ms (at 9k rejected frames/s a minute outgrew the row bound). */
  deadLetterPruneMs: 10_000,
  /** How often readings partitions are made ahead and old ones dropped, ms. */
  readingsMaintenanceMs: 3_600_000,
  /** Days a finished month stays in row form before compaction (READINGS_HOT_DAYS). */
  readingsHotDays: 7,
  /** INACTIVITY_CHECK_MS: how often meters are checked for missed frames. */
  inactivityCheckMs: 30_000,
  /** INACTIVITY_SLACK_S: grace beyond 2 × interval × batch (network, broker, clock jitter). */
  inactivitySlackS: 60,
  /**
   * REJECT_LOG_INTERVAL_S × 1000: rejected frames are logged per reason, the first of each such
   * interval with its details and then the interval's count, not one line per frame (a flood of
   * 9k frames/s wrote about 1 MB/s of log). citymeter_frames_rejected_total counts every one.
   */
  rejectLogIntervalMs: 10_000,
  /** How long POST /meters/:id/… waits for the broker to take a downlink, ms. */
  downlinkTimeoutMs: 10_000,
  /** EXPORT_LICENSE: the licence the utility publishes its readings under (SPDX id or text), in every export. */
  exportLicense: "CC-BY-4.0",
  /** EXPORT_LICENSE_URL: where that licence is; with a licence of your own and no URL, none is given. */
  exportLicenseUrl: "https://creativecommons.org/licenses/by/4.0/",
  /**
   * NGSI_LD_URL (unset: no forwarder) and the forwarder's bounds: NGSI_LD_BATCH entities per
   * upsert, a flush every NGSI_LD_FLUSH_MS, at most NGSI_LD_MAX_PENDING meters waiting, a request
   * limit, and the longest wait after failures.
   */
  /**
   * Budgets of the open reads (SensorThings, NGSI-LD, readings, export), so that no reader can stall
   * ingest (bench/README.md, "Reads beside ingest"):
   * - READ_STATEMENT_MS: the longest one read statement may run (PostgreSQL: statement_timeout of
   *   the read pool; PGlite, which has no working statement_timeout: its worker thread is stopped
   *   and the database reopened).
   * - READ_CONCURRENCY: read statements at once (PostgreSQL: the read pool's size; PGlite: 1, so an
   *   ingest commit waits behind at most one read statement).
   * - READ_QUEUE: reads waiting for a turn; past it, 503 CM_ERR_BUSY with Retry-After.
   * - READ_MAX_ENTITIES: SensorThings entities in one answer, every $expand level together.
   * - READ_MAX_BYTES: the largest JSON answer built in memory (exports stream and have no cap).
   * - EXPORT_CONCURRENCY: export files streaming at once.
   * - READ_MAX_COST: a SensorThings statement the planner costs above this is refused unrun (at
   *   300 meters × 960 readings, measured on PGlite: a sort of every Observation costs 198k and
   *   takes 7.7 s, a count of them 95k and 2.8 s; paged reads of one Datastream cost under 2k).
   * - READ_SHARE_PCT: while ingest keeps the data tier busy, reads get at most this percentage of
   *   its time (store/read-share.ts; bench/README.md, "Reads beside ingest").
   */
  reads: {
    statementMs: 5000,
    concurrency: 4,
    queue: 32,
    maxEntities: 20_000,
    maxBytes: 32 * 1024 * 1024,
    exportConcurrency: 2,
    sharePct: 25,
    maxCost: 100_000,
  },
  /**
   * RELEASE_MAX_BYTES: the largest release bytecode POST /releases takes (its body is bounded to
   * the base64 of this and a little more); today's builds are about 62 kB (`npm run build:boards`).
   */
  releaseMaxBytes: 262_144,
  /**
   * The WSSK endpoint (bridge/src/wssk/, README "Updates over the air: the WSSK link"), on when
   * WSSK_PORT is set. WSSK_HOST: its listener. WSSK_MAX_LINKS: links and handshakes at once, past it
   * a meter is refused (503) until one ends. WSSK_HANDSHAKE_MS: from the upgrade request to the
   * meter's auth (measured in the simulator: 2.5-7.6 ms).
   */
  wssk: { host: "127.0.0.1", maxLinks: 1000, handshakeMs: 5000 },
  /**
   * GET /meters/:id/device-log (routes/device-log.ts): a meter's device log over its WSSK link,
   * for field debugging. `seconds` 1 to maxSeconds (default defaultSeconds), `maxLines` 1 to
   * maxLines (default defaultLines); a stream ends after maxBytes of events whatever it was asked;
   * at most maxStreams streams at once in the process (503 CM_ERR_BUSY past it) and one per meter
   * (429 CM_ERR_DEVICE_LOG_BUSY). A comment line every heartbeatMs keeps a quiet stream open
   * (HTTP_IDLE_TIMEOUT_MS, proxies).
   */
  deviceLog: {
    defaultSeconds: 60,
    maxSeconds: 600,
    defaultLines: 2000,
    maxLines: 10_000,
    maxBytes: 1_048_576,
    maxStreams: 4,
    heartbeatMs: 15_000,
  },
  ngsiLd: { batchSize: 100, flushMs: 1000, maxPending: 100_000, timeoutMs: 5000, maxBackoffMs: 30_000 },
} as const

/** The HTTP caps and timeouts (BRIDGE_DEFAULTS.http), as configured. */
export type HttpLimits = { -readonly [K in keyof typeof BRIDGE_DEFAULTS.http]: number }
