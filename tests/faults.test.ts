// No reading lost, none stored twice (issue 3): the real firmware runs through broker, bridge,
// database and power faults in one run; at the end, what the firmware generated is compared with
// what the API returns.
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, test } from "vitest"
import { SimMeter } from "../sim/src/meter.js"
import { BridgeProcess, MosquittoProcess, TcpProxy, freePort } from "./infra.js"
import { PG_URL, dropSchema, uid, waitFor } from "./helpers.js"

interface Row {
  ts: string
  boot: number
  seq: number
  idx: number
  volumeMl: number
  waterTotalMl: number
  energyWh: number
  energyTotalWh: number
  backfill: boolean
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** A meter whose flow and energy counters advance steadily, like real consumption. */
function drivenMeter(meterId: string, mqttPort: number) {
  const dir = mkdtempSync(join(tmpdir(), "cm-flash-"))
  const meter = new SimMeter({
    meterId,
    flashFile: join(dir, "flash.bin"),
    settings: { MQTT_HOST: "127.0.0.1", MQTT_PORT: mqttPort, INTERVAL_S: 1, BATCH: 2 },
  })
  const counters = { water: 50_000, energy: 1_000 }
  meter.setWater({ volumeMl: counters.water })
  meter.setElectricity({ energyWh: counters.energy, powerW: 500, voltageDv: 2300 })
  meter.setPressure(300_000)
  let timer: NodeJS.Timeout | undefined
  // consumption starts once the meter has read its counters (a new meter adopts their values)
  const startDriving = () => {
    timer = setInterval(() => {
      counters.water += 37 // 22.2 L/min
      counters.energy += 1
      meter.setWater({ volumeMl: counters.water })
      meter.setElectricity({ energyWh: counters.energy })
    }, 100)
  }
  return { meter, counters, initial: { ...counters }, startDriving, stopDriving: () => clearInterval(timer) }
}

/** Frames the firmware made, from its console: "citymeter: frame boot=B seq=S n=N". */
function generated(meter: SimMeter): Map<string, number> {
  const frames = new Map<string, number>()
  for (const l of meter.lines) {
    const m = /frame boot=(\d+) seq=(\d+) n=(\d+)/.exec(l)
    if (m) frames.set(`${m[1]}/${m[2]}`, Number(m[3]))
  }
  return frames
}

function compare(meter: SimMeter, rows: Row[]) {
  const gen = generated(meter)
  const generatedIntervals = [...gen.values()].reduce((a, b) => a + b, 0)
  const keys = rows.map((r) => `${r.boot}/${r.seq}/${r.idx}`)
  const unique = new Set(keys)
  let missing = 0
  for (const [frame, n] of gen) for (let i = 0; i < n; i++) if (!unique.has(`${frame}/${i}`)) missing++
  return { generated: generatedIntervals, stored: rows.length, duplicates: keys.length - unique.size, missing }
}

async function caughtUp(meter: SimMeter, bridge: BridgeProcess, meterId: string, timeoutMs = 60_000) {
  await waitFor(
    "every generated frame stored",
    async () => {
      const gen = generated(meter)
      if (!bridge.apiUrl) return false
      let rows: Row[]
      try {
        rows = (await bridge.get<{ readings: Row[] }>(`/meters/${meterId}/readings`)).readings
      } catch {
        return false
      }
      const stored = new Set(rows.map((r) => `${r.boot}/${r.seq}`))
      return gen.size > 0 && [...gen.keys()].every((k) => stored.has(k))
    },
    timeoutMs,
    250,
  ).catch((e) => {
    writeFileSync(
      `/tmp/fault-debug-${meterId}.log`,
      `bridge output:\n${bridge.output.slice(-30).join("\n")}\nmeter:\n${meter.lines.slice(-60).join("\n")}`,
    )
    throw e
  })
}

function checkContinuity(rows: Row[], initial: { water: number; energy: number }) {
  const sorted = [...rows].sort((a, b) => a.boot - b.boot || a.seq - b.seq || a.idx - b.idx)
  expect(sorted[0].waterTotalMl - sorted[0].volumeMl).toBe(initial.water)
  expect(sorted[0].energyTotalWh - sorted[0].energyWh).toBe(initial.energy)
  for (let i = 1; i < sorted.length; i++) {
    expect(sorted[i].waterTotalMl, `water total at row ${i}`).toBe(sorted[i - 1].waterTotalMl + sorted[i].volumeMl)
    expect(sorted[i].energyTotalWh, `energy total at row ${i}`).toBe(sorted[i - 1].energyTotalWh + sorted[i].energyWh)
  }
  return sorted
}

describe("fault injection on Mosquitto + PostgreSQL", () => {
  const cleanup: (() => Promise<void>)[] = []
  afterAll(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {})
  })

  test("broker restart, bridge SIGKILL, database outage and power loss lose nothing and store nothing twice", async () => {
    const t0 = Date.now()
    const broker = await MosquittoProcess.create()
    cleanup.push(() => broker.stop())
    const pgPort = Number(new URL(PG_URL).port || 5432)
    const proxy = await TcpProxy.create(pgPort)
    cleanup.push(() => proxy.close())
    const schema = `t_${uid("f").slice(2).replace(/-/g, "_")}`
    cleanup.push(() => dropSchema(schema))
    const pgViaProxy = new URL(PG_URL)
    pgViaProxy.port = String(proxy.port)
    const bridge = new BridgeProcess({
      MQTT_URL: broker.url,
      DATABASE_URL: pgViaProxy.toString(),
      DATABASE_SCHEMA: schema,
      MQTT_CLIENT_ID: uid("fault-bridge"),
    })
    await bridge.start()
    cleanup.push(() => bridge.stop())

    const meterId = uid("fault")
    const { meter, initial, startDriving, stopDriving } = drivenMeter(meterId, broker.port)
    cleanup.push(async () => {
      stopDriving()
      await meter.stop()
    })
    await meter.start()
    await waitFor("first frame", async () => generated(meter).size >= 1, 30_000)
    startDriving()
    await waitFor("frames", async () => generated(meter).size >= 3, 30_000)
    await caughtUp(meter, bridge, meterId)

    // 1. the broker goes away while the meter keeps measuring
    await broker.stop()
    await sleep(6000)
    await broker.start()
    await caughtUp(meter, bridge, meterId)

    // 2. the bridge crashes mid-stream
    await sleep(1500)
    await bridge.kill()
    await sleep(4000)
    await bridge.start()
    await caughtUp(meter, bridge, meterId)

    // 3. the database is unreachable for a while
    proxy.cut()
    await sleep(6000)
    proxy.restore()
    await caughtUp(meter, bridge, meterId)

    // 4. power loss: the VM stops dead and boots again from its flash
    await meter.stop()
    await sleep(3000)
    await meter.start()
    await waitFor(
      "frames after reboot",
      async () => [...generated(meter).keys()].some((k) => k.startsWith("2/")),
      30_000,
    )
    await sleep(3000)
    await caughtUp(meter, bridge, meterId)

    const rows = (await bridge.get<{ readings: Row[] }>(`/meters/${meterId}/readings`)).readings
    const counts = compare(meter, rows)
    console.log(
      `fault run (mosquitto+postgres): generated ${counts.generated}, stored ${counts.stored}, duplicates ${counts.duplicates}, missing ${counts.missing}, backfilled ${rows.filter((r) => r.backfill).length}, ${Math.round((Date.now() - t0) / 1000)} s`,
    )
    expect(counts.missing).toBe(0)
    expect(counts.duplicates).toBe(0)
    expect(counts.stored).toBe(counts.generated)
    checkContinuity(rows, initial)
    expect(new Set(rows.map((r) => r.boot))).toEqual(new Set([1, 2]))
    expect(rows.some((r) => r.backfill)).toBe(true) // made during the outages, sent from the queue
  })
})

describe("fault injection on the embedded broker + PGlite", () => {
  const cleanup: (() => Promise<void>)[] = []
  afterAll(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {})
  })

  test("bridge process SIGKILL (broker and database with it) and power loss lose nothing", async () => {
    const t0 = Date.now()
    const port = await freePort()
    const dataDir = mkdtempSync(join(tmpdir(), "cm-pglite-"))
    const bridge = new BridgeProcess({ EMBEDDED_MQTT_PORT: String(port), DATABASE_URL: `pglite:${dataDir}` })
    await bridge.start()
    cleanup.push(() => bridge.stop())
    const meterId = uid("efault")
    const { meter, initial, startDriving, stopDriving } = drivenMeter(meterId, port)
    cleanup.push(async () => {
      stopDriving()
      await meter.stop()
    })
    await meter.start()
    await waitFor("first frame", async () => generated(meter).size >= 1, 30_000)
    startDriving()
    await waitFor("frames", async () => generated(meter).size >= 3, 30_000)
    await caughtUp(meter, bridge, meterId)

    await sleep(1500)
    await bridge.kill()
    await sleep(5000)
    await bridge.start()
    await caughtUp(meter, bridge, meterId)

    await meter.stop()
    await sleep(3000)
    await meter.start()
    await waitFor(
      "frames after reboot",
      async () => [...generated(meter).keys()].some((k) => k.startsWith("2/")),
      30_000,
    )
    await sleep(3000)
    await caughtUp(meter, bridge, meterId)

    const rows = (await bridge.get<{ readings: Row[] }>(`/meters/${meterId}/readings`)).readings
    const counts = compare(meter, rows)
    console.log(
      `fault run (embedded): generated ${counts.generated}, stored ${counts.stored}, duplicates ${counts.duplicates}, missing ${counts.missing}, ${Math.round((Date.now() - t0) / 1000)} s`,
    )
    expect(counts.missing).toBe(0)
    expect(counts.duplicates).toBe(0)
    expect(counts.stored).toBe(counts.generated)
    checkContinuity(rows, initial)
  })
})
