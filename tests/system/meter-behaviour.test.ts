// A real meter, end to end with the real firmware in the VM: the simulator plays a leak,
// a burst, a pressure drop and a tamper, and the API shows each alarm raised and cleared at the
// interval where it happened; a Config downlink changes the interval; a skewed clock is corrected.
import mqtt from "mqtt"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { startEmbeddedBroker } from "../../bridge/src/broker.js"
import { decodeUplink } from "../../bridge/src/codec.js"
import { encodeDownlink } from "../../bridge/src/codec/downlink.js"
import { downTopic, upTopic } from "../../bridge/src/topics.js"
import { SimMeter } from "../../sim/src/meter.js"
import { apiReadings, startStack, uid, waitFor, type ApiReading, type StackKind, type TestStack } from "../helpers.js"

type Reading = ApiReading
interface Alarm {
  type: string
  active: boolean
  ts: string
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function useStack(kind: StackKind) {
  const ctx: { stack?: TestStack; meters: SimMeter[]; timers: NodeJS.Timeout[] } = { meters: [], timers: [] }
  beforeAll(async () => {
    ctx.stack = await startStack(kind)
  })
  afterAll(async () => {
    ctx.timers.forEach(clearInterval)
    for (const m of ctx.meters) await m.stop()
    await ctx.stack?.stop()
  })
  return ctx
}

async function startMeter(ctx: ReturnType<typeof useStack>, settings: Record<string, number>) {
  const url = new URL(ctx.stack!.mqttUrl)
  const meter = new SimMeter({
    meterId: uid("meter"),
    water: "register", // exact volumes per interval, reverse flow
    settings: { MQTT_HOST: url.hostname, MQTT_PORT: Number(url.port), INTERVAL_S: 1, BATCH: 2, ...settings },
  })
  ctx.meters.push(meter)
  meter.setWater({ volumeMl: 0 })
  meter.setElectricity({ energyWh: 0, powerW: 100, voltageDv: 2300 })
  meter.setPressure(300_000)
  await meter.start()
  return meter
}

const readings = (stack: TestStack, meterId: string) => apiReadings<Reading>(stack, meterId)

async function alarms(stack: TestStack, meterId: string): Promise<Alarm[]> {
  const res = await stack.app.inject({ url: `/meters/${meterId}/alarms` })
  return res.statusCode === 200 ? res.json().alarms : []
}

describe("edge alarms on Mosquitto + PostgreSQL", () => {
  const ctx = useStack("mosquitto+postgres")

  test("leak, burst, pressure drop and tamper are raised and cleared at the right interval", async () => {
    const stack = ctx.stack!
    const meter = await startMeter(ctx, { LEAK_S: 4, BURST_MLMIN: 60_000, P_LOW_PA: 200_000 })
    let volume = 0
    let flowPer100ms = 0
    ctx.timers.push(
      setInterval(() => {
        volume += flowPer100ms
        meter.setWater({ volumeMl: volume })
      }, 100),
    )
    await waitFor("synced readings", async () => (await readings(stack, meter.meterId)).some((r) => r.timeSynced))
    await sleep(2000)

    flowPer100ms = 10 // 6 L/min, continuous: a leak after 4 s
    await sleep(7000)
    flowPer100ms = 0
    await sleep(3000)
    flowPer100ms = 250 // 150 L/min: a burst, too short to be a leak
    await sleep(1500)
    flowPer100ms = 0
    await sleep(3000)
    meter.setPressure(150_000)
    await sleep(3000)
    meter.setPressure(300_000)
    await sleep(3000)
    meter.setTamper(true)
    const tamperOnAt = Date.now()
    await sleep(2500)
    meter.setTamper(false)
    const tamperOpenS = (Date.now() - tamperOnAt) / 1000

    const kinds = ["LEAK", "BURST", "PRESSURE_LOW", "TAMPER"]
    const all = await waitFor(
      "every alarm raised and cleared",
      async () => {
        const a = await alarms(stack, meter.meterId)
        return kinds.every((k) => a.filter((x) => x.type === k).length === 2) ? a : false
      },
      30_000,
      250,
    )
    // the frames holding the clearing intervals
    const rows = await waitFor("the intervals of every edge stored", async () => {
      const r = await readings(stack, meter.meterId)
      return all.every((a) => r.some((x) => x.ts === a.ts)) ? r : false
    })
    const at = (ts: string) => rows.find((r) => r.ts === ts)
    const byType = (k: string) => all.filter((a) => a.type === k)

    for (const k of kinds) {
      const [raised, cleared] = byType(k)
      expect(raised.active, k).toBe(true)
      expect(cleared.active, k).toBe(false)
      expect(Date.parse(cleared.ts), k).toBeGreaterThan(Date.parse(raised.ts))
    }
    // LEAK: raised at the interval that completed 4 s of uninterrupted flow, cleared at the first dry one
    const [leakOn, leakOff] = byType("LEAK")
    const leakIdx = rows.findIndex((r) => r.ts === leakOn.ts)
    expect(leakIdx).toBeGreaterThanOrEqual(3)
    for (let i = leakIdx - 3; i <= leakIdx; i++) expect(rows[i].volumeMl).toBeGreaterThan(0)
    expect(rows[leakIdx - 4]?.volumeMl ?? 0).toBe(0)
    expect(at(leakOff.ts)?.volumeMl).toBe(0)
    expect(rows[rows.findIndex((r) => r.ts === leakOff.ts) - 1].volumeMl).toBeGreaterThan(0)
    // BURST: the raising interval's rate is at least 60 L/min; the clearing one is below 57 L/min
    const [burstOn, burstOff] = byType("BURST")
    expect(at(burstOn.ts)!.volumeMl * 60).toBeGreaterThanOrEqual(60_000)
    expect(at(burstOff.ts)!.volumeMl * 60).toBeLessThan(57_000)
    // PRESSURE_LOW: raised where the interval minimum fell below 200 kPa, cleared where it recovered
    const [lowOn, lowOff] = byType("PRESSURE_LOW")
    expect(at(lowOn.ts)!.pressureMinPa).toBeLessThan(200_000)
    expect(at(lowOff.ts)!.pressureMinPa).toBeGreaterThanOrEqual(210_000)
    const lowIdx = rows.findIndex((r) => r.ts === lowOn.ts)
    expect(rows[lowIdx - 1].pressureMinPa).toBeGreaterThanOrEqual(200_000)
    // TAMPER: open as long as the switch was (however long the test's timer took), to the
    // interval: raised at the interval that saw it open, cleared at the first that did not
    const [tOn, tOff] = byType("TAMPER")
    const openS = (Date.parse(tOff.ts) - Date.parse(tOn.ts)) / 1000
    expect(openS).toBeGreaterThanOrEqual(Math.floor(tamperOpenS) - 1)
    expect(openS).toBeLessThanOrEqual(Math.ceil(tamperOpenS) + 2)
    // nothing else fired
    expect(all.filter((a) => !kinds.includes(a.type))).toEqual([])
  })
})

describe("downlinks on the embedded broker + PGlite", () => {
  const ctx = useStack("embedded")
  let pub: mqtt.MqttClient
  beforeAll(async () => {
    pub = await mqtt.connectAsync(ctx.stack!.mqttUrl, { clientId: uid("ops") })
  })
  afterAll(async () => {
    await pub?.endAsync()
  })

  test("a Config downlink changes the interval; the following frames follow it and the birth confirms it", async () => {
    const stack = ctx.stack!
    const meter = await startMeter(ctx, {})
    await waitFor("readings at 1 s", async () => (await readings(stack, meter.meterId)).length >= 4)
    const payload = encodeDownlink({ config: { intervalS: 2, batch: 3, leakS: 600 } })
    await pub.publishAsync(downTopic(meter.meterId, "config"), Buffer.from(payload), { qos: 1 })
    const rows = await waitFor(
      "readings at 2 s",
      async () => {
        const r = await readings(stack, meter.meterId)
        return r.filter((x) => x.intervalS === 2).length >= 6 ? r : false
      },
      40_000,
    )
    // once switched, every later interval is 2 s long and 2 s apart
    const first2 = rows.findIndex((r) => r.intervalS === 2)
    for (let i = first2; i < rows.length; i++) {
      expect(rows[i].intervalS).toBe(2)
      if (i > first2) expect(Date.parse(rows[i].ts) - Date.parse(rows[i - 1].ts)).toBe(2000)
    }
    const m = (await stack.app.inject({ url: `/meters/${meter.meterId}` })).json()
    expect(m.intervalS).toBe(2)
    expect(m.batch).toBe(3)
  })

  test("a Config the firmware cannot run is refused by the meter itself, logged, and nothing changes", async () => {
    const stack = ctx.stack!
    const meter = await startMeter(ctx, {})
    await waitFor("readings", async () => (await readings(stack, meter.meterId)).length >= 2)
    // past the API's checks (sent straight to the broker): a batch over the flash slot, and a hall
    // sensor's 450 pulses/L at the stated 50 L/min (375 pulses/s, past any board's pulse inputs)
    // one at a time: a meter applies the newest config at its next frame boundary
    let refused: string[] = []
    for (const config of [{ batch: 9, leakS: 600 }, { pulsesPerL: 450 }]) {
      await pub.publishAsync(downTopic(meter.meterId, "config"), Buffer.from(encodeDownlink({ config })), { qos: 1 })
      const n = refused.length
      refused = await waitFor("the refusal logged", async () => {
        const r = meter.lines.filter((l) => l.includes("citymeter: config refused"))
        return r.length > n ? r : false
      })
    }
    expect(refused.join("\n")).toMatch(
      /BATCH=9: a frame can take over \d+ B, over the 177 B a flash slot holds for a frame/,
    )
    expect(refused.join("\n")).toMatch(/PULSES_PER_L=450 at MAX_FLOW_LMIN=50 is 375 pulses\/s/)
    expect(meter.lines.some((l) => l.includes("config applied"))).toBe(false)
    const before = (await readings(stack, meter.meterId)).length
    await waitFor("readings go on", async () => (await readings(stack, meter.meterId)).length >= before + 2)
    const m = (await stack.app.inject({ url: `/meters/${meter.meterId}` })).json()
    expect([m.intervalS, m.batch]).toEqual([1, 2])
  })

  test("a skewed meter clock is detected from its frames and corrected by a TimeSync", async () => {
    const stack = ctx.stack!
    const meter = await startMeter(ctx, {})
    await waitFor("synced readings", async () => (await readings(stack, meter.meterId)).some((r) => r.timeSynced))
    // put the meter's clock an hour behind, as a bad time source would
    const skewed = encodeDownlink({ time: { unixMs: Date.now() - 3600_000 } })
    await pub.publishAsync(downTopic(meter.meterId, "time"), Buffer.from(skewed), { qos: 1 })
    const hourAgo = (r: Reading) => Math.abs(Date.now() - 3600_000 - Date.parse(r.ts)) < 30_000
    await waitFor("skewed readings", async () => (await readings(stack, meter.meterId)).some(hourAgo))
    const t0 = Date.now()
    const rows = await waitFor(
      "corrected readings",
      async () => {
        const r = await readings(stack, meter.meterId)
        return r.filter((x) => Date.parse(x.ts) > t0 - 5000).length >= 2 ? r : false
      },
      30_000,
    )
    const latest = rows[rows.length - 1]
    expect(Math.abs(Date.parse(latest.ts) - Date.now())).toBeLessThan(10_000)
    expect((await stack.metrics.clockCorrections.get()).values[0].value).toBeGreaterThanOrEqual(1)
  })
})

describe("resend on request", () => {
  test("a Resend downlink makes the meter send its queued frames from that sequence number at once", async () => {
    // a broker with no bridge: nothing is acknowledged, so every frame stays queued on the meter
    const broker = await startEmbeddedBroker(0)
    const meterId = uid("resend")
    const seen: { boot: number; seq: number }[] = []
    const sub = await mqtt.connectAsync(broker.url, { clientId: uid("sub") })
    await sub.subscribeAsync(upTopic(meterId, "readings"), { qos: 1 })
    sub.on("message", (_t, payload) => {
      const f = decodeUplink("readings", payload)
      if (f.kind === "readings") seen.push({ boot: f.boot, seq: f.seq })
    })
    const meter = new SimMeter({
      meterId,
      water: "register",
      settings: { MQTT_PORT: broker.port, INTERVAL_S: 1, BATCH: 1 },
    })
    meter.setWater({ volumeMl: 0 })
    meter.setElectricity({ energyWh: 0, powerW: 100, voltageDv: 2300 })
    meter.setPressure(300_000)
    try {
      await meter.start()
      // at most 4 frames are in flight unacknowledged: seq 1..4 go out, then the meter waits
      await waitFor("four frames sent", async () => new Set(seen.map((s) => s.seq)).size >= 4)
      // what comes after the request: on request seq 2..4 at once; on their own (every 8 s,
      // oldest first) seq 1 would come first — the order tells them apart, not a clock
      const before = seen.length
      await sub.publishAsync(
        downTopic(meterId, "resend"),
        Buffer.from(encodeDownlink({ resend: { boot: seen[0].boot, fromSeq: 2 } })),
        { qos: 1 },
      )
      const after = () => seen.slice(before).map((s) => s.seq)
      await waitFor("frames 2..4 again", async () => [2, 3, 4].every((q) => after().includes(q)), 20_000, 50)
      const again = after()
      const lastOfRequest = Math.max(...[2, 3, 4].map((q) => again.indexOf(q)))
      expect(again.slice(0, lastOfRequest + 1).sort()).toEqual([2, 3, 4])
    } finally {
      await meter.stop()
      await sub.endAsync()
      await broker.close()
    }
  })
})
