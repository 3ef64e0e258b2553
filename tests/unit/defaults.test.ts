// The bridge's defaults are written once (bridge/src/defaults.ts): the README's Configuration
// table and configFromEnv with an empty environment say the same. And the one retry helper.
import { readFileSync } from "node:fs"
import { describe, expect, test } from "vitest"
import { BRIDGE_DEFAULTS as D } from "../../bridge/src/defaults.js"
import { retry, retryDelayMs } from "../../bridge/src/retry.js"
import { configFromEnv } from "../../bridge/src/service.js"

/** README rows `| \`A\`, \`B\` | \`x\`, \`y\` | … |` as { A: "x", B: "y" }. */
function readmeDefaults(): Record<string, string> {
  const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8")
  const out: Record<string, string> = {}
  for (const line of readme.split("\n")) {
    const cells = line.split("|").map((c) => c.trim())
    if (cells.length < 4 || !cells[1].startsWith("`")) continue
    const names = [...cells[1].matchAll(/`([A-Z_]+)`/g)].map((m) => m[1])
    const values = [...cells[2].matchAll(/`([^`]+)`/g)].map((m) => m[1])
    if (names.length === values.length) names.forEach((n, i) => (out[n] = values[i]))
  }
  return out
}

describe("bridge defaults", () => {
  test("the README's Configuration table states the defaults of bridge/src/defaults.ts", () => {
    const readme = readmeDefaults()
    expect({
      MODE: readme.MODE,
      LOG_LEVEL: readme.LOG_LEVEL,
      EMBEDDED_MQTT_PORT: readme.EMBEDDED_MQTT_PORT,
      EMBEDDED_MQTT_MAX_RETAINED_BYTES: readme.EMBEDDED_MQTT_MAX_RETAINED_BYTES,
      DATABASE_URL: readme.DATABASE_URL,
      HTTP_PORT: readme.HTTP_PORT,
      HTTP_HOST: readme.HTTP_HOST,
      HTTP_MAX_CONNECTIONS: readme.HTTP_MAX_CONNECTIONS,
      HTTP_IDLE_TIMEOUT_MS: readme.HTTP_IDLE_TIMEOUT_MS,
      HTTP_HEADERS_TIMEOUT_MS: readme.HTTP_HEADERS_TIMEOUT_MS,
      HTTP_REQUEST_TIMEOUT_MS: readme.HTTP_REQUEST_TIMEOUT_MS,
      HTTP_KEEP_ALIVE_TIMEOUT_MS: readme.HTTP_KEEP_ALIVE_TIMEOUT_MS,
      LIVE_MAX_CLIENTS: readme.LIVE_MAX_CLIENTS,
      LIVE_MAX_BUFFER_BYTES: readme.LIVE_MAX_BUFFER_BYTES,
      MQTT_CONSUMERS: readme.MQTT_CONSUMERS,
      INGEST_BATCH_FRAMES: readme.INGEST_BATCH_FRAMES,
      INGEST_BATCH_MS: readme.INGEST_BATCH_MS,
      INGEST_STALL_S: readme.INGEST_STALL_S,
      REJECT_LOG_INTERVAL_S: readme.REJECT_LOG_INTERVAL_S,
      DEAD_LETTER_MAX_ROWS: readme.DEAD_LETTER_MAX_ROWS,
      DEAD_LETTER_MAX_AGE_DAYS: readme.DEAD_LETTER_MAX_AGE_DAYS,
      INACTIVITY_CHECK_MS: readme.INACTIVITY_CHECK_MS,
      INACTIVITY_SLACK_S: readme.INACTIVITY_SLACK_S,
      EXPORT_LICENSE: readme.EXPORT_LICENSE,
      EXPORT_LICENSE_URL: readme.EXPORT_LICENSE_URL,
      READ_STATEMENT_MS: readme.READ_STATEMENT_MS,
      READ_CONCURRENCY: readme.READ_CONCURRENCY,
      READ_QUEUE: readme.READ_QUEUE,
      READ_MAX_ENTITIES: readme.READ_MAX_ENTITIES,
      READ_MAX_BYTES: readme.READ_MAX_BYTES,
      EXPORT_CONCURRENCY: readme.EXPORT_CONCURRENCY,
      READ_SHARE_PCT: readme.READ_SHARE_PCT,
      READ_MAX_COST: readme.READ_MAX_COST,
      NGSI_LD_BATCH: readme.NGSI_LD_BATCH,
      NGSI_LD_FLUSH_MS: readme.NGSI_LD_FLUSH_MS,
      NGSI_LD_MAX_PENDING: readme.NGSI_LD_MAX_PENDING,
      RELEASE_MAX_BYTES: readme.RELEASE_MAX_BYTES,
      WSSK_HOST: readme.WSSK_HOST,
      WSSK_MAX_LINKS: readme.WSSK_MAX_LINKS,
      WSSK_HANDSHAKE_MS: readme.WSSK_HANDSHAKE_MS,
    }).toEqual({
      MODE: D.role,
      LOG_LEVEL: D.logLevel,
      EMBEDDED_MQTT_PORT: String(D.embeddedMqttPort),
      EMBEDDED_MQTT_MAX_RETAINED_BYTES: String(D.embeddedMqttMaxRetainedBytes),
      DATABASE_URL: D.databaseUrl,
      HTTP_PORT: String(D.httpPort),
      HTTP_HOST: D.httpHost,
      HTTP_MAX_CONNECTIONS: String(D.http.maxConnections),
      HTTP_IDLE_TIMEOUT_MS: String(D.http.idleTimeoutMs),
      HTTP_HEADERS_TIMEOUT_MS: String(D.http.headersTimeoutMs),
      HTTP_REQUEST_TIMEOUT_MS: String(D.http.requestTimeoutMs),
      HTTP_KEEP_ALIVE_TIMEOUT_MS: String(D.http.keepAliveTimeoutMs),
      LIVE_MAX_CLIENTS: String(D.http.liveMaxClients),
      LIVE_MAX_BUFFER_BYTES: String(D.http.liveMaxBufferBytes),
      MQTT_CONSUMERS: String(D.consumers),
      INGEST_BATCH_FRAMES: String(D.batchMaxFrames),
      INGEST_BATCH_MS: String(D.batchWindowMs),
      INGEST_STALL_S: String(D.stallMs / 1000),
      REJECT_LOG_INTERVAL_S: String(D.rejectLogIntervalMs / 1000),
      DEAD_LETTER_MAX_ROWS: String(D.deadLetterRetention.maxRows),
      DEAD_LETTER_MAX_AGE_DAYS: String(D.deadLetterRetention.maxAgeS / 86400),
      INACTIVITY_CHECK_MS: String(D.inactivityCheckMs),
      INACTIVITY_SLACK_S: String(D.inactivitySlackS),
      EXPORT_LICENSE: D.exportLicense,
      EXPORT_LICENSE_URL: D.exportLicenseUrl,
      READ_STATEMENT_MS: String(D.reads.statementMs),
      READ_CONCURRENCY: String(D.reads.concurrency),
      READ_QUEUE: String(D.reads.queue),
      READ_MAX_ENTITIES: String(D.reads.maxEntities),
      READ_MAX_BYTES: String(D.reads.maxBytes),
      EXPORT_CONCURRENCY: String(D.reads.exportConcurrency),
      READ_SHARE_PCT: String(D.reads.sharePct),
      READ_MAX_COST: String(D.reads.maxCost),
      NGSI_LD_BATCH: String(D.ngsiLd.batchSize),
      NGSI_LD_FLUSH_MS: String(D.ngsiLd.flushMs),
      NGSI_LD_MAX_PENDING: String(D.ngsiLd.maxPending),
      RELEASE_MAX_BYTES: String(D.releaseMaxBytes),
      WSSK_HOST: D.wssk.host,
      WSSK_MAX_LINKS: String(D.wssk.maxLinks),
      WSSK_HANDSHAKE_MS: String(D.wssk.handshakeMs),
    })
  })

  test("an empty environment configures the bridge with those defaults", () => {
    expect(configFromEnv({})).toMatchObject({
      role: D.role,
      demo: false,
      embeddedMqttPort: D.embeddedMqttPort,
      databaseUrl: D.databaseUrl,
      httpPort: D.httpPort,
      httpHost: D.httpHost,
      httpLimits: D.http,
      stallMs: D.stallMs,
      rejectLogIntervalMs: D.rejectLogIntervalMs,
      deadLetterRetention: D.deadLetterRetention,
      inactivityCheckMs: D.inactivityCheckMs,
      inactivitySlackS: D.inactivitySlackS,
      exportLicense: { name: D.exportLicense, url: D.exportLicenseUrl },
      releaseMaxBytes: D.releaseMaxBytes,
    })
    // a licence of the utility's own has no URL unless one is given
    expect(configFromEnv({ EXPORT_LICENSE: "ODbL-1.0" }).exportLicense).toEqual({ name: "ODbL-1.0" })
    // the NGSI-LD forwarder is off unless NGSI_LD_URL is set
    expect(configFromEnv({}).ngsiLd).toBeUndefined()
    expect(configFromEnv({ NGSI_LD_URL: "http://broker:1026" }).ngsiLd).toEqual({
      url: "http://broker:1026",
      batchSize: D.ngsiLd.batchSize,
      flushMs: D.ngsiLd.flushMs,
      maxPending: D.ngsiLd.maxPending,
    })
    // the WSSK endpoint is off unless WSSK_PORT is set; its bounds default as the README says
    expect(configFromEnv({}).wssk).toBeUndefined()
    expect(configFromEnv({ WSSK_PORT: "8081" }).wssk).toEqual({ port: 8081, ...D.wssk })
    expect(() => configFromEnv({ WSSK_PORT: "70000" })).toThrow(/WSSK_PORT/)
    expect(() => configFromEnv({ WSSK_PORT: "8081", WSSK_MAX_LINKS: "0" })).toThrow(/WSSK_MAX_LINKS/)
  })
})

describe("retry", () => {
  test("tries a retryable failure again with a growing delay, up to its bound; throws any other at once", async () => {
    expect([0, 1, 2, 30].map((a) => retryDelayMs(a, 200, 5000))).toEqual([200, 400, 600, 5000])
    const seen: number[] = []
    let calls = 0
    const v = await retry(
      async () => {
        if (++calls < 4) throw new Error("down")
        return "up"
      },
      { retryable: (e) => (e as Error).message === "down", onRetry: (_e, a) => seen.push(a), baseMs: 1 },
    )
    expect({ v, calls, seen }).toEqual({ v: "up", calls: 4, seen: [0, 1, 2] })
    calls = 0
    const refused = retry(
      async () => {
        calls++
        throw new Error("refused")
      },
      { retryable: (e) => (e as Error).message === "down", baseMs: 1 },
    )
    await expect(refused).rejects.toThrow("refused")
    expect(calls).toBe(1)
  })
})
