// Start and stop are symmetric (bridge/src/service.ts): a start whose step fails closes what the
// earlier steps opened (store, embedded broker, MQTT connections, HTTP server) before the failure
// is thrown, each step made to fail in turn; and SIGTERM lets ingest commit and acknowledge the
// frames it has in hand (on both hops) before the process exits 0.
import { spawn } from "node:child_process"
import { createServer, type Server } from "node:net"
import { join } from "node:path"
import mqtt from "mqtt"
import pg from "pg"
import { afterAll, describe, expect, test, vi } from "vitest"
import { upTopic } from "../../bridge/src/topics.js"
import { startService, type ServiceConfig } from "../../bridge/src/service.js"
import { MosquittoProcess, freePort } from "../../testkit/infra.js"
import { readingsFrame } from "../../testkit/frames.js"
import { PG_URL, captureLog, dropSchema, uid, waitFor } from "../helpers.js"

/** Test seams around the real steps: run after the store has opened, and make a step throw. */
const seams = vi.hoisted(() => ({
  storesOpened: 0,
  afterStoreOpened: undefined as undefined | (() => Promise<void>),
  failBridge: undefined as undefined | ((call: number) => boolean),
  bridgeCalls: 0,
}))
vi.mock("../../bridge/src/store/engines.js", async (importOriginal) => {
  const real = await importOriginal<typeof import("../../bridge/src/store/engines.js")>()
  return {
    ...real,
    openStore: async (...args: Parameters<typeof real.openStore>) => {
      const store = await real.openStore(...args)
      seams.storesOpened++
      await seams.afterStoreOpened?.()
      return store
    },
  }
})
vi.mock("../../bridge/src/bridge.js", async (importOriginal) => {
  const real = await importOriginal<typeof import("../../bridge/src/bridge.js")>()
  return {
    ...real,
    startBridge: (...args: Parameters<typeof real.startBridge>) => {
      if (seams.failBridge?.(++seams.bridgeCalls)) throw new Error("injected: this pipeline cannot start")
      return real.startBridge(...args)
    },
  }
})

const root = join(import.meta.dirname, "../..")
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** The process's handles that a leak would leave: sockets, servers, worker ports (PGlite's thread). */
function handles() {
  const counts: Record<string, number> = {}
  for (const r of process.getActiveResourcesInfo())
    if (/TCP|Pipe|MessagePort|Worker/.test(r)) counts[r] = (counts[r] ?? 0) + 1
  return counts
}

/** handles() once the ones closed just before (a probe's port) have left the loop. */
async function baseline() {
  await sleep(100)
  return handles()
}

/** Waits for the handles to return to `before` (sockets close a tick after their end). */
async function expectHandlesBackTo(before: Record<string, number>) {
  await waitFor("every handle the start opened closed", async () => deepEqual(handles(), before), 5000).catch(() => {})
  expect(handles()).toEqual(before)
}
const deepEqual = (a: object, b: object) => JSON.stringify(sortKeys(a)) === JSON.stringify(sortKeys(b))
const sortKeys = (o: object) => Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b)))

/** Occupies a port on 127.0.0.1 (another program holding it). */
async function occupy(port: number): Promise<Server> {
  const s = createServer()
  await new Promise<void>((r) => s.listen(port, "127.0.0.1", () => r()))
  return s
}
const closeServer = (s: Server) => new Promise<void>((r) => s.close(() => r()))

/** True when nothing listens on the port: it can be bound. */
async function portFree(port: number): Promise<boolean> {
  const s = createServer()
  return new Promise((r) => {
    s.once("error", () => r(false))
    s.listen(port, "127.0.0.1", () => s.close(() => r(true)))
  })
}

/** PostgreSQL sessions of this application_name. */
async function pgSessions(app: string): Promise<number> {
  const c = new pg.Client({ connectionString: PG_URL })
  await c.connect()
  try {
    const r = await c.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1",
      [app],
    )
    return r.rows[0].n
  } finally {
    await c.end()
  }
}
const withAppName = (url: string, app: string) => `${url}${url.includes("?") ? "&" : "?"}application_name=${app}`

describe("a start that fails closes what it opened", () => {
  const cleanup: (() => Promise<unknown>)[] = []
  afterAll(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {})
  })
  const base = () => ({ demo: true, log: captureLog().log, clientId: uid("startup") })

  /** Starts with `config`, expects the failure, and checks that nothing it opened is left open. */
  async function failsCleanly(config: ServiceConfig, error: RegExp, before?: Record<string, number>) {
    before ??= await baseline()
    seams.storesOpened = 0
    await expect(startService(config)).rejects.toThrow(error)
    await expectHandlesBackTo(before)
  }

  test("configuration: several consumers without MQTT_URL are refused before anything opens", async () => {
    await failsCleanly(
      { ...base(), databaseUrl: "pglite:memory", embeddedMqttPort: 0, consumers: 2 },
      /several consumers need an MQTT 5 broker/,
    )
    expect(seams.storesOpened).toBe(0)
  })

  test("store: a DATABASE_URL no engine serves is refused, and nothing else opened", async () => {
    // (a data tier that is down or refuses the login is waited for: openStoreWithRetry)
    await failsCleanly({ ...base(), databaseUrl: "mysql://127.0.0.1/city", embeddedMqttPort: 0 }, /DATABASE_URL must/)
    expect(seams.storesOpened).toBe(0)
  })

  test("embedded broker: its port taken after the store opened; the PostgreSQL pools are ended", async () => {
    const schema = `t_${uid("st").slice(3)}`
    cleanup.push(() => dropSchema(schema))
    const app = `cm_startup_${schema}`
    const port = await freePort()
    let blocker: Server | undefined
    seams.afterStoreOpened = async () => {
      blocker = await occupy(port)
      // the pools hold connections now: what the failure must end
      expect(await pgSessions(app)).toBeGreaterThan(0)
    }
    const before = await baseline()
    try {
      await failsCleanly(
        { ...base(), databaseUrl: withAppName(PG_URL, app), storeOptions: { schema }, embeddedMqttPort: port },
        /EADDRINUSE/,
        { ...before, TCPServerWrap: (before.TCPServerWrap ?? 0) + 1 }, // the blocker's
      )
    } finally {
      seams.afterStoreOpened = undefined
      if (blocker) await closeServer(blocker)
    }
    expect(seams.storesOpened).toBe(1)
    await waitFor("the sessions ended", async () => (await pgSessions(app)) === 0, 5000)
  })

  test("ingest: the second pipeline fails to start; the first one's connections and the store close", async () => {
    const broker = await MosquittoProcess.create()
    cleanup.push(() => broker.stop())
    seams.bridgeCalls = 0
    seams.failBridge = (call) => call === 2
    try {
      await failsCleanly(
        { ...base(), databaseUrl: "pglite:memory", mqttUrl: broker.url, consumers: 2 },
        /this pipeline cannot start/,
      )
    } finally {
      seams.failBridge = undefined
    }
    expect(seams.bridgeCalls).toBe(2)
    expect(seams.storesOpened).toBe(1)
  })

  test("HTTP API: its port taken after the store opened; the embedded broker, the bridge and PGlite close", async () => {
    const httpPort = await freePort()
    const mqttPort = await freePort()
    let blocker: Server | undefined
    seams.afterStoreOpened = async () => {
      blocker = await occupy(httpPort)
    }
    const before = await baseline()
    try {
      await failsCleanly(
        { ...base(), databaseUrl: "pglite:memory", embeddedMqttPort: mqttPort, httpPort, httpHost: "127.0.0.1" },
        /EADDRINUSE/,
        { ...before, TCPServerWrap: (before.TCPServerWrap ?? 0) + 1 },
      )
    } finally {
      seams.afterStoreOpened = undefined
      if (blocker) await closeServer(blocker)
    }
    expect(seams.storesOpened).toBe(1)
    expect(await portFree(mqttPort)).toBe(true)
  })

  test("a start that succeeds is undone by stop(), which may be called twice", async () => {
    const mqttPort = await freePort()
    const before = await baseline()
    const svc = await startService({ ...base(), databaseUrl: "pglite:memory", embeddedMqttPort: mqttPort, httpPort: 0 })
    expect(await portFree(mqttPort)).toBe(false)
    await Promise.all([svc.stop(), svc.stop()])
    await expectHandlesBackTo(before)
    expect(await portFree(mqttPort)).toBe(true)
  })
})

describe("SIGTERM", () => {
  const cleanup: (() => Promise<unknown>)[] = []
  afterAll(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {})
  })

  test("the batch in flight and the frames queued behind it are committed once and acknowledged; exit 0", async () => {
    const broker = await MosquittoProcess.create()
    cleanup.push(() => broker.stop())
    const schema = `t_${uid("sigterm").slice(3).replace(/-/g, "_")}`
    cleanup.push(() => dropSchema(schema))
    const env = {
      ...process.env,
      HTTP_PORT: "0",
      MQTT_URL: broker.url,
      DATABASE_URL: PG_URL,
      DATABASE_SCHEMA: schema,
      MQTT_CLIENT_ID: uid("sigterm-bridge"),
      CITYMETER_MODE: "demo",
      INGEST_BATCH_FRAMES: "20",
    }
    const start = () => {
      const proc = spawn(process.execPath, ["--import", "tsx", join(root, "bridge/src/main.ts")], {
        cwd: root,
        env,
        stdio: ["ignore", "pipe", "pipe"],
      })
      const output: string[] = []
      let apiUrl: string | undefined
      const onData = (b: Buffer) => {
        output.push(String(b))
        apiUrl ??= /API (http:\/\/\S+)/.exec(String(b))?.[1]
      }
      proc.stdout.on("data", onData)
      proc.stderr.on("data", onData)
      const exited = new Promise<{ code: number | null; signal: string | null }>((r) =>
        proc.once("exit", (code, signal) => r({ code, signal })),
      )
      cleanup.push(async () => {
        if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL")
      })
      const ready = waitFor(
        "the bridge's API line",
        async () => {
          if (proc.exitCode !== null) throw new Error(`bridge exited: ${output.join("")}`)
          return apiUrl !== undefined
        },
        45_000,
        50,
      )
      const received = async () => {
        const text = await (await fetch(`${apiUrl}/metrics`)).text()
        return [...text.matchAll(/^citymeter_frames_received_total\{[^}]*\} (\d+)/gm)].reduce((n, m) => n + +m[1], 0)
      }
      return { proc, exited, ready, received, output }
    }

    const db = new pg.Client({ connectionString: PG_URL, options: `-c search_path=${schema}` })
    await db.connect()
    cleanup.push(() => db.end())
    const acks: string[] = []
    const sub = await mqtt.connectAsync(broker.url, { clientId: uid("sigterm-acks") })
    cleanup.push(() => sub.endAsync())
    await sub.subscribeAsync("citymeter/v1/+/down/ack", { qos: 1 })
    sub.on("message", (topic) => acks.push(topic.split("/")[2]))
    const pub = await mqtt.connectAsync(broker.url, { clientId: uid("sigterm-pub") })
    cleanup.push(() => pub.endAsync())

    const bridge = start()
    await bridge.ready
    const nowS = Math.floor(Date.now() / 1000)
    const meters = Array.from({ length: 15 }, (_, i) => `st-${schema.slice(2, 10)}-${i}`)
    const frames = [1, 2, 3].flatMap((seq) => meters.map((m) => [m, seq] as const))
    const frame = (seq: number) =>
      readingsFrame({ seq, startS: nowS - 3000 + (seq - 1) * 240, totalMl: 1000 + 4 * seq, volumeMl: [1, 1, 1, 1] })

    // a slow data tier: the first batch's writes wait for this lock, so that batch is in flight
    // and the other frames queue behind it when the signal comes
    await db.query("BEGIN")
    await db.query("LOCK TABLE frames IN EXCLUSIVE MODE")
    for (const [m, seq] of frames) await pub.publishAsync(upTopic(m, "readings"), frame(seq), { qos: 1 })
    await waitFor("every frame in the bridge's hands", async () => (await bridge.received()) === frames.length, 20_000)
    const inFlight = await db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'frames' AND NOT l.granted",
    )
    expect(inFlight.rows[0].n).toBeGreaterThan(0)
    bridge.proc.kill("SIGTERM")
    await sleep(1000)
    expect(bridge.proc.exitCode).toBeNull() // draining: the batch waits for the data tier
    const released = Date.now()
    await db.query("COMMIT")
    const exit = await bridge.exited
    const exitMs = Date.now() - released
    expect(exit, bridge.output.join("")).toEqual({ code: 0, signal: null })
    expect(exitMs).toBeLessThan(5000)

    const stored = await db.query<{ n: number; keys: number }>(
      "SELECT count(*)::int AS n, count(DISTINCT (meter_id, boot, seq))::int AS keys FROM frames",
    )
    expect(stored.rows[0]).toEqual({ n: frames.length, keys: frames.length })
    await waitFor("an ack per frame", async () => acks.length >= frames.length, 5000)
    expect(acks.length).toBe(frames.length)
    expect(new Set(acks)).toEqual(new Set(meters))

    // the broker had every PUBACK: the bridge's session holds nothing to send again
    const again = start()
    await again.ready
    await sleep(1500)
    expect(await again.received()).toBe(0)
    again.proc.kill("SIGTERM")
    expect(await again.exited).toEqual({ code: 0, signal: null })
    console.log(
      `SIGTERM with a batch in flight: ${frames.length} frames committed once and acknowledged, exit 0 in ${exitMs} ms after the data tier came back`,
    )
  }, 120_000)
})
