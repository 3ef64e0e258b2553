// The embedded default is durable before it acknowledges: PGlite's file store synced
// nothing (it ran PostgreSQL with fsync off, and Emscripten's fsync reached no file), so a host
// power cut could lose frames already acknowledged to meters that had dropped them. Now the WAL is
// fsync'ed at every commit, before the batch's acknowledgements leave. Observed twice: in process,
// the fsync calls PGlite makes through node:fs in its thread and the files they reach; and, where strace is
// installed, the fsync(2) system calls of a bridge process against the acks its meter receives.
import { execFileSync, spawn } from "node:child_process"
import { mkdtempSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import mqtt from "mqtt"
import { afterAll, describe, expect, test } from "vitest"
import { openStore } from "../../bridge/src/store/engines.js"
import type { Store } from "../../bridge/src/store/store.js"
import { upTopic } from "../../bridge/src/topics.js"
import { freePort } from "../../testkit/infra.js"
import { uid, waitFor } from "../helpers.js"
import { readingsFrame } from "../../testkit/frames.js"
import { readingRow } from "../../testkit/rows.js"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..")

const reading = (meterId: string, seq: number) =>
  readingRow(meterId, new Date(Date.UTC(2026, 0, 1, 0, seq)), { intervalS: 60, seq, volumeMl: 1, waterTotalMl: seq })

const hasStrace = (() => {
  try {
    execFileSync("strace", ["-V"], { stdio: "ignore" })
    return true
  } catch {
    // CI installs it (.ci/run) and sets CITYMETER_REQUIRE_STRACE: there the test never skips
    if (process.env.CITYMETER_REQUIRE_STRACE) throw new Error("strace is required (CITYMETER_REQUIRE_STRACE)")
    return false
  }
})()

describe("durable embedded store (PGlite on disk)", () => {
  const cleanup: (() => Promise<void>)[] = []
  afterAll(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {})
  })

  test("every commit fsyncs the WAL before it resolves; the data files reach the disk at a checkpoint", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cm-durable-"))
    // PGlite runs in its own thread (store/pglite-thread.ts), which reports each fsync(2) it makes
    const events: string[] = []
    const store: Store = await openStore(`pglite:${dir}`, { onFsync: (path) => events.push(`fsync ${path}`) })
    cleanup.push(() => store.close())
    const wal = (e: string) => e.startsWith("fsync ") && e.includes(`${dir}/pg_wal/`)
    for (let seq = 1; seq <= 5; seq++) {
      events.push(`commit ${seq} begins`)
      await store.ingestBatch(async (tx) => {
        await tx.touchMeters([{ meterId: "d1", firstAt: new Date(), lastAt: new Date() }])
        const [claim] = await tx.claimFrames([{ meterId: "d1", boot: 1, seq, kind: "readings", at: new Date() }])
        expect(claim.kind).toBe("stored")
        await tx.writeReadings([reading("d1", seq)])
      })
      events.push(`commit ${seq} resolved`)
    }
    // between each commit's start and its resolution, the WAL segment was fsync'ed
    for (let seq = 1; seq <= 5; seq++) {
      const from = events.indexOf(`commit ${seq} begins`)
      const to = events.indexOf(`commit ${seq} resolved`)
      expect(events.slice(from, to).some(wal), `commit ${seq}: ${events.slice(from, to).join(", ")}`).toBe(true)
    }
    const before = events.length
    await (store as unknown as { db: { query(sql: string): Promise<unknown> } }).db.query("CHECKPOINT")
    const checkpoint = events.slice(before)
    expect(checkpoint.some((e) => e.includes(`${dir}/base/`))).toBe(true) // table files
    expect(checkpoint.some((e) => e.includes(`${dir}/global/pg_control`))).toBe(true)
  })

  test("control: PGlite as it ships (durable: false, fsync off) makes no fsync call at all", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cm-durable-"))
    const calls: string[] = []
    const store: Store = await openStore(`pglite:${dir}`, { durable: false, onFsync: (path) => calls.push(path) })
    cleanup.push(() => store.close())
    await store.ingestBatch(async (tx) => {
      await tx.touchMeters([{ meterId: "d0", firstAt: new Date(), lastAt: new Date() }])
      await tx.claimFrames([{ meterId: "d0", boot: 1, seq: 1, kind: "readings", at: new Date() }])
      await tx.writeReadings([reading("d0", 1)])
    })
    await (store as unknown as { db: { query(sql: string): Promise<unknown> } }).db.query("CHECKPOINT")
    expect(calls).toEqual([])
  })

  test.skipIf(!hasStrace)(
    "a bridge process on the embedded defaults: each frame's ack reaches the meter after an fsync(2) of the WAL (strace)",
    async () => {
      const dir = mkdtempSync(join(tmpdir(), "cm-durable-"))
      const trace = join(dir, "strace.log")
      const port = await freePort()
      const proc = spawn(
        "strace",
        [
          "-f",
          "-ttt",
          "-y",
          "-e",
          "trace=fsync,fdatasync",
          "-o",
          trace,
          process.execPath,
          "--import",
          "tsx",
          "bridge/src/main.ts",
        ],
        {
          cwd: root,
          env: {
            ...process.env,
            HTTP_PORT: "0",
            EMBEDDED_MQTT_PORT: String(port),
            DATABASE_URL: `pglite:${join(dir, "db")}`,
            CITYMETER_MODE: "demo",
          },
          stdio: ["ignore", "pipe", "pipe"],
          // a process group of its own: killing strace alone leaves the traced bridge running
          detached: true,
        },
      )
      cleanup.push(async () => {
        if (proc.exitCode === null && proc.signalCode === null)
          await new Promise<void>((r) => {
            proc.once("exit", () => r())
            process.kill(-proc.pid!, "SIGKILL")
          })
      })
      let out = ""
      proc.stdout!.on("data", (b: Buffer) => (out += String(b)))
      proc.stderr!.on("data", (b: Buffer) => (out += String(b)))
      await waitFor("bridge up", async () => /API http/.test(out), 60_000)

      const meterId = uid("durable")
      const meter = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { clientId: uid("meter") })
      cleanup.push(() => meter.endAsync())
      await meter.subscribeAsync(`citymeter/v1/${meterId}/down/ack`, { qos: 1 })
      const nowS = Math.floor(Date.now() / 1000)
      const sent: number[] = []
      const acked: number[] = []
      let acks = 0
      meter.on("message", () => {
        acked.push(Date.now() / 1000)
        acks++
      })
      for (let seq = 1; seq <= 5; seq++) {
        const payload = readingsFrame({ seq, startS: nowS - 600 + seq * 60, volumeMl: [seq] })
        sent.push(Date.now() / 1000)
        await meter.publishAsync(upTopic(meterId, "readings"), Buffer.from(payload), { qos: 1 })
        await waitFor(`ack ${seq}`, async () => acks === seq, 30_000, 20)
      }
      // "PID TIME fsync(FD</…/pg_wal/…>) = 0", or, when another thread's call came between, split
      // into "PID TIME fsync(FD</…/pg_wal/…> <unfinished ...>" and "PID TIME <... fsync resumed>) = 0"
      const walSyncs: number[] = []
      const started = new Map<string, number>()
      for (const l of readFileSync(trace, "utf8").split("\n")) {
        const [pid, time] = l.split(/\s+/)
        if (/fsync\(\d+<[^>]*\/pg_wal\/[^>]*>\) = 0/.test(l)) walSyncs.push(Number(time))
        else if (/fsync\(\d+<[^>]*\/pg_wal\/[^>]*> <unfinished \.\.\.>/.test(l)) started.set(pid, Number(time))
        else if (/<\.\.\. f(data)?sync resumed>.*= 0/.test(l) && started.has(pid)) {
          walSyncs.push(started.get(pid)!)
          started.delete(pid)
        }
      }
      // between a frame's publish and its ack, a completed fsync(2) of a WAL segment
      for (let i = 0; i < 5; i++)
        expect(
          walSyncs.some((t) => t > sent[i] && t < acked[i]),
          `frame ${i + 1}: sent ${sent[i]}, acked ${acked[i]}, WAL fsyncs ${walSyncs.join(" ")}`,
        ).toBe(true)
      console.log(`strace: ${walSyncs.length} fsync(2) of pg_wal segments; each of 5 acks followed one`)
    },
    120_000,
  )
})
