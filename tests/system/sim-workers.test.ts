// The simulator's worker pool: real-firmware meters spread over worker threads, and
// every frame their firmware made is stored by the bridge, once.
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { SimPool } from "../../sim/src/workers.js"
import { apiReadings, STACKS, startStack, uid, waitFor, type ApiReading, type TestStack } from "../helpers.js"

const METERS = 8
const WORKERS = 2

describe.each(STACKS)("worker-pool simulator on %s", (kind) => {
  let stack: TestStack
  let pool: SimPool | undefined
  beforeAll(async () => {
    stack = await startStack(kind)
  })
  afterAll(async () => {
    await pool?.stop()
    await stack?.stop()
  })

  const readings = (meterId: string) => apiReadings(stack, meterId)

  test(`${METERS} meters over ${WORKERS} threads: the bridge stores every frame their firmware made`, async () => {
    const url = new URL(stack.mqttUrl)
    const prefix = uid("pool")
    /** "boot/seq" of every frame each firmware logged (`citymeter: frame boot=… seq=… n=1`). */
    const made = new Map<string, string[]>()
    pool = await SimPool.start({
      workers: WORKERS,
      meters: Array.from({ length: METERS }, (_, i) => ({
        meterId: `${prefix}-${i}`,
        settings: { MQTT_HOST: url.hostname, MQTT_PORT: Number(url.port), INTERVAL_S: 1, BATCH: 1 },
      })),
      onLine: (id, line) => {
        const m = /citymeter: frame boot=(\d+) seq=(\d+) n=1/.exec(line)
        if (m) made.set(id, [...(made.get(id) ?? []), `${m[1]}/${m[2]}`])
      },
    })
    expect(pool.workerCount).toBe(WORKERS)
    const perThread = (await pool.stats()).map((s) => s.meters)
    expect(perThread).toEqual([METERS / WORKERS, METERS / WORKERS])

    const ids = [...pool.frames.keys()]
    await waitFor("3 frames from every meter", async () => ids.every((id) => (made.get(id)?.length ?? 0) >= 3), 60_000)
    const snapshot = new Map(ids.map((id) => [id, [...made.get(id)!]]))
    const key = (r: ApiReading) => `${r.boot}/${r.seq}`
    await waitFor(
      "the bridge to store every frame made so far",
      async () => {
        for (const id of ids) {
          const stored = new Set((await readings(id)).map(key))
          if (!snapshot.get(id)!.every((k) => stored.has(k))) return false
        }
        return true
      },
      60_000,
    )
    await pool.stop()
    pool = undefined
    for (const id of ids) {
      const rows = await readings(id)
      const stored = rows.map(key)
      // each frame once (BATCH 1: one reading per frame), and only frames the firmware made
      expect(new Set(stored).size, id).toBe(stored.length)
      const all = new Set(made.get(id))
      expect(
        stored.filter((k) => !all.has(k)),
        id,
      ).toEqual([])
      expect(
        snapshot.get(id)!.filter((k) => !stored.includes(k)),
        id,
      ).toEqual([])
      expect(rows.every((r) => r.intervalS === 1 && r.idx === 0)).toBe(true)
    }
  })
})
