// The real firmware's MQTT client against a hostile downlink side.
//
// A meter that survives a flood. Replays of one stored frame once made the bridge send a
// simulated meter 20,000 acks: the firmware's reader handled them all without yielding, the VM
// panicked with 60001 (InfiniteLoop) and rebooted, and the lost interval's pulses folded into the
// next one as a false BURST. Here the real firmware gets 20,000 acks (most for frames it never
// made, some duplicates) plus time, resend, malformed and oversize downlinks, published as fast as
// the embedded broker takes them. It must not panic or reboot, and what the bridge stores must be
// what the simulated sensor produced: every interval once, contiguous, none merged.
import { Aedes } from "aedes"
import { createServer, type AddressInfo } from "node:net"
import mqtt from "mqtt"
import { afterAll, beforeAll, expect, test } from "vitest"
import { encodeDownlink } from "../../bridge/src/codec/downlink.js"
import { downTopic, type DownKind } from "../../bridge/src/topics.js"
import { SimMeter } from "../../sim/src/meter.js"
import { apiReadings, startStack, uid, waitFor, type TestStack } from "../helpers.js"

const ACKS = 20_000
const INTERVAL_S = 1
const BATCH = 2
/** Steady flow from the simulated sensor: 22.2 L/min, 370 mL per interval. */
const ML_PER_S = 370
/**
 * BURST at 5 intervals' worth of flow in one. Sampling every quarter of a 1 s interval, with the
 * VM starved while the suite runs in parallel on 2 cores, moves flow between neighbours: 2.02x and
 * 3.8x were seen in CI with nothing lost or merged. Lost or merged intervals are caught by the
 * interval count, the contiguous timestamps and the totals chain below, not by this bound.
 */
const MAX_INTERVAL_RATIO = 5
const BURST_MLMIN = ML_PER_S * 60 * MAX_INTERVAL_RATIO
/** Payloads the firmware's decoder must reject: truncated varints and lengths, a bad wire type. */
const MALFORMED = ["0a", "0a05", "ff", "ffffffffffffffffffffff01", "1a0a0801", "0a02ffff", "0f", "2203"]
/** Over the firmware's receive limit (firmware/mqtt.ts, maxPacket 1024 B): skipped, not buffered. */
const OVERSIZE_BYTES = 3000
/** Every this many acks: a resend, the malformed payloads and an oversize downlink. */
const OTHER_EVERY = 1000
/** Publishes between two turns of the event loop, which the VM and the broker share. */
const SLICE = 200

let stack: TestStack
let meter: SimMeter | undefined
let pub: mqtt.MqttClient | undefined
let driver: NodeJS.Timeout | undefined
beforeAll(async () => {
  stack = await startStack("embedded")
})
afterAll(async () => {
  clearInterval(driver)
  await pub?.endAsync()
  await meter?.stop()
  await stack?.stop()
})

const readings = (meterId: string) => apiReadings(stack, meterId)

/** Sum of a number the firmware logs with each frame ("citymeter: downlinks: 12 acks (ignored 3 ..."). */
function logged(m: SimMeter, re: RegExp): number {
  return m.lines.reduce((s, l) => s + Number(re.exec(l)?.[1] ?? 0), 0)
}

test(`a meter sent ${ACKS} acks and malformed downlinks at once neither panics nor loses or merges an interval`, async () => {
  const t0 = Date.now()
  const meterId = uid("flood")
  const url = new URL(stack.mqttUrl)
  meter = new SimMeter({
    meterId,
    water: "register", // a flood at rates past the GPIO polling: a register counts it
    settings: { MQTT_HOST: url.hostname, MQTT_PORT: Number(url.port), INTERVAL_S, BATCH, BURST_MLMIN },
  })
  // The counter follows the wall clock, not a timer's ticks: a stalled test process cannot move
  // flow from one interval to another, only the firmware's own timing can.
  const initial = 100_000
  let driveFrom = 0
  let frozen: number | undefined = undefined
  const counter = () =>
    frozen ?? (driveFrom ? initial + Math.floor(((Date.now() - driveFrom) * ML_PER_S) / 1000) : initial)
  meter.setWater({ volumeMl: initial })
  meter.setElectricity({ energyWh: 500, powerW: 300, voltageDv: 2300 })
  meter.setPressure(300_000)
  await meter.start()
  await waitFor("first frame stored", async () => (await readings(meterId)).length >= BATCH, 30_000)
  driveFrom = Date.now()
  driver = setInterval(() => meter!.setWater({ volumeMl: counter() }), 20)
  await waitFor("three synced frames", async () => (await readings(meterId)).filter((r) => r.timeSynced).length >= 6)
  const bootBefore = (await stack.app.inject({ url: `/meters/${meterId}` })).json().boot
  const storedSeqs = [...new Set((await readings(meterId)).map((r) => r.seq))]

  // the flood, QoS 1 like the bridge's downlinks; time first, while the backlog is short (its
  // transit delay becomes the meter's clock error)
  pub = await mqtt.connectAsync(stack.mqttUrl, { clientId: uid("flood-pub") })
  const send = (kind: DownKind, payload: Uint8Array) =>
    pub!.publish(downTopic(meterId, kind), Buffer.from(payload), { qos: 1 })
  const floodStart = Date.now()
  for (let i = 0; i < 3; i++) send("time", encodeDownlink({ time: { unixMs: Date.now() } }))
  let duplicates = 0
  let rounds = 0
  for (let i = 0; i < ACKS; i++) {
    if (i % 10 === 0) {
      duplicates++ // an ack the meter already had
      send("ack", encodeDownlink({ ack: { boot: bootBefore, seq: storedSeqs[i % storedSeqs.length] } }))
    } else if (i % 3 === 0)
      send("ack", encodeDownlink({ ack: { boot: 7, seq: i } })) // another boot
    else send("ack", encodeDownlink({ ack: { boot: bootBefore, seq: 1_000_000 + i } })) // a frame never made
    if (i % OTHER_EVERY === OTHER_EVERY / 2) {
      rounds++
      send("resend", encodeDownlink({ resend: { boot: bootBefore, fromSeq: 1 } }))
      for (const hex of MALFORMED) send(rounds % 2 ? "config" : "ack", Buffer.from(hex, "hex"))
      send("ack", Buffer.alloc(OVERSIZE_BYTES, 0x0a))
    }
    if (i % SLICE === SLICE - 1) await new Promise((r) => setImmediate(r))
  }
  await waitFor("broker took the flood", async () => Object.keys(pub!.outgoing).length === 0, 60_000, 50)
  const floodMs = Date.now() - floodStart
  await waitFor("meter read the flood", async () => logged(meter!, /downlinks: (\d+) acks/) >= ACKS, 60_000, 250)
  const drainedMs = Date.now() - floodStart

  // a few frames after the flood; then the flow stops and the last frame carries the final total
  await new Promise((r) => setTimeout(r, 3000))
  frozen = counter()
  const final = frozen
  const rows = await waitFor(
    "final total stored",
    async () => {
      const r = await readings(meterId)
      return r.length && r[r.length - 1].waterTotalMl === final && r.length % BATCH === 0 ? r : false
    },
    30_000,
    250,
  )
  const bootAfter = (await stack.app.inject({ url: `/meters/${meterId}` })).json().boot
  const alarms = (await stack.app.inject({ url: `/meters/${meterId}/alarms` })).json().alarms as { type: string }[]
  // frames the firmware made, from its console: "citymeter: frame boot=B seq=S n=N"
  const frames: { key: string; n: number; timeApplied: boolean }[] = []
  meter.lines.forEach((l, i) => {
    const f = /frame boot=(\d+) seq=(\d+) n=(\d+)/.exec(l)
    // the downlink counts logged with a frame include the time syncs applied before it was stamped
    const time = Number(/, (\d+) time,/.exec(meter!.lines[i + 1] ?? "")?.[1] ?? 0)
    if (f) frames.push({ key: `${f[1]}/${f[2]}`, n: Number(f[3]), timeApplied: time > 0 })
  })
  const generated = frames.reduce((s, f) => s + f.n, 0)
  const perInterval = ML_PER_S * INTERVAL_S
  const maxVolume = Math.max(...rows.map((r) => r.volumeMl))
  console.log(
    `flood: ${ACKS} acks (${duplicates} duplicates) + ${3 + rounds * (2 + MALFORMED.length)} other downlinks; ` +
      `broker took them in ${floodMs} ms, the meter had read them after ${drainedMs} ms; ` +
      `intervals generated ${generated}, stored ${rows.length}; largest interval ${maxVolume} mL (steady ${perInterval}); ` +
      `boot ${bootBefore} -> ${bootAfter}; ${Math.round((Date.now() - t0) / 1000)} s`,
  )

  // no panic, no reboot
  expect(meter.lines.filter((l) => /Exception|PANIC|panic|OutOfMemory|InfiniteLoop/.test(l))).toEqual([])
  expect(meter.lines.filter((l) => /citymeter: meter \S+ boot \d+/.test(l))).toHaveLength(1)
  expect(bootAfter).toBe(bootBefore)
  // the meter read the whole flood, and counted what it ignored instead of logging each packet
  expect(logged(meter, /ignored (\d+) acks/)).toBeGreaterThanOrEqual(ACKS - duplicates)
  expect(logged(meter, /(\d+) bad/)).toBe(rounds * MALFORMED.length)
  expect(logged(meter, /(\d+) resend/)).toBe(rounds)
  expect(logged(meter, /(\d+) time,/)).toBeGreaterThanOrEqual(3) // and the answer to the birth
  expect(logged(meter, /mqtt: (\d+) packets skipped/)).toBe(rounds)
  expect(meter.lines.filter((l) => /mqtt: skipped a packet of type 3 and \d+ B/.test(l))).toHaveLength(rounds)
  expect(meter.lines.filter((l) => /citymeter: ack \d+\/\d+ for no queued frame/.test(l))).toEqual([])
  // and it went on measuring meanwhile: frames were closed while the flood was being read
  expect(
    meter.lines.filter((l) => Number(/ignored (\d+) acks/.exec(l)?.[1] ?? 0) >= 100).length,
  ).toBeGreaterThanOrEqual(2)

  // one reading per generated interval, each once, one boot
  const keys = rows.map((r) => `${r.boot}/${r.seq}/${r.idx}`)
  expect(new Set(keys).size).toBe(keys.length)
  expect(rows.length).toBe(generated)
  for (const f of frames) for (let i = 0; i < f.n; i++) expect(keys).toContain(`${f.key}/${i}`)
  expect(new Set(rows.map((r) => r.boot))).toEqual(new Set([bootBefore]))
  // contiguous: each interval starts where the previous one ended; a frame stamped just after a
  // time sync may move by the sync's transit delay (under a second)
  for (let i = 1; i < rows.length; i++) {
    const step = Date.parse(rows[i].ts) - Date.parse(rows[i - 1].ts)
    const synced = rows[i].idx === 0 && frames.find((f) => f.key === `${rows[i].boot}/${rows[i].seq}`)?.timeApplied
    if (synced) expect(Math.abs(step - INTERVAL_S * 1000), `step before row ${i}`).toBeLessThanOrEqual(1000)
    else expect(step, `step before row ${i}`).toBe(INTERVAL_S * 1000)
  }
  // volumes: the totals chain, start at and end on the sensor's counter, and no interval holds
  // two intervals' flow (sampling every quarter interval, with the sensor's streaming lag, moves
  // up to half an interval's flow between neighbours: 0.75x and 1.5x are normal, up to 3.8x seen on a busy CI machine)
  expect(rows[0].waterTotalMl - rows[0].volumeMl).toBe(initial)
  for (let i = 1; i < rows.length; i++) expect(rows[i].waterTotalMl).toBe(rows[i - 1].waterTotalMl + rows[i].volumeMl)
  expect(rows.reduce((s, r) => s + r.volumeMl, 0)).toBe(final - initial)
  expect(maxVolume).toBeLessThan(perInterval * MAX_INTERVAL_RATIO)
  expect(alarms.filter((a) => a.type === "BURST")).toEqual([])
})

// Without its downlink subscription a meter gets no acks and resends everything forever
test("a refused downlink subscription (SUBACK 0x80) is logged and retried until the broker grants it", async () => {
  const meterId = uid("suback")
  const filter = downTopic(meterId, "ack").replace(/ack$/, "#")
  let asked = 0
  const aedes = await Aedes.createBroker({
    // the first request is refused, as by an ACL not yet updated: SUBACK 0x80
    authorizeSubscribe: (_client, sub, done) =>
      done(null, sub.topic === filter && ++asked === 1 ? (null as never) : sub),
  })
  const server = createServer(aedes.handle)
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()))
  const port = (server.address() as AddressInfo).port
  const ops = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { clientId: uid("ops") })
  const m = new SimMeter({ meterId, water: "register", settings: { MQTT_PORT: port, INTERVAL_S: 1, BATCH: 1 } })
  const time = () =>
    ops.publishAsync(downTopic(meterId, "time"), Buffer.from(encodeDownlink({ time: { unixMs: Date.now() } })), {
      qos: 1,
    })
  try {
    await m.start()
    await m.waitForLine(/mqtt: subscription refused \(SUBACK 0x80\); retrying in \d+ ms/, 10_000)
    await time() // not subscribed: this one is not delivered
    await new Promise((r) => setTimeout(r, 500))
    expect(m.lines.some((l) => /citymeter: time synced/.test(l))).toBe(false)
    await waitFor("a second SUBSCRIBE", async () => asked >= 2, 10_000, 50)
    await new Promise((r) => setTimeout(r, 200))
    await time()
    await m.waitForLine(/citymeter: time synced/, 5_000)
    expect(asked).toBe(2) // granted: no more attempts
    expect(m.lines.filter((l) => /citymeter: meter \S+ boot \d+/.test(l))).toHaveLength(1)
  } finally {
    await m.stop()
    await ops.endAsync()
    await new Promise<void>((r) => aedes.close(() => server.close(() => r())))
  }
})
