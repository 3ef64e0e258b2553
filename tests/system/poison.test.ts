// No frame can stop the city, end to end: poison frames published through Mosquitto in
// the middle of real-firmware meters' traffic, on a production bridge (registry on). Each poison is
// dead-lettered with its reason, every real reading is stored; and a bridge restarted under the
// same client id, with poison waiting in its broker session, comes up and drains.
import { randomBytes } from "node:crypto"
import mqtt from "mqtt"
import { afterAll, expect, test } from "vitest"
import { startService, type Service } from "../../bridge/src/service.js"
import { upTopic } from "../../bridge/src/topics.js"
import { compare, drivenMeter, generated, sleep } from "../fault-util.js"
import { MOSQUITTO_URL, PG_URL, captureLog, dropSchema, uid, waitFor, type ApiReading } from "../helpers.js"
import { uplink } from "../../testkit/frames.js"

const schema = `t_${randomBytes(6).toString("hex")}`
const clientId = uid("poison-bridge")
const meterIds = [1, 2, 3].map((i) => uid(`poison-m${i}`))
const meters = meterIds.map((id) => drivenMeter(id, Number(new URL(MOSQUITTO_URL).port || 1883)))
let svc: Service | undefined

afterAll(async () => {
  for (const d of meters) {
    d.stopDriving()
    await d.meter.stop()
  }
  await svc?.stop()
  // end the bridge's persistent session at the broker
  await (await mqtt.connectAsync(MOSQUITTO_URL, { clientId, clean: true })).endAsync()
  await dropSchema(schema)
})

/** Frames that decode, and each hold a value no column (or no physics) can hold. */
function poisons(nowS: number): [string, Buffer][] {
  const up = (o: Record<string, unknown>) => uplink({ boot: 1, seq: 1, ...o })
  const readings = (o: Record<string, unknown>) =>
    up({ readings: { startS: nowS - 60, timeSynced: true, intervalS: 1, ...o } })
  return [
    ["readings", readings({ electricity: { energyWh: [1], voltageDv: [2 ** 31] } })],
    ["readings", readings({ pressure: { avgPa: [4294967295] } })],
    ["readings", readings({ water: { totalMl: "9223372036854775808", volumeMl: [1] } })],
    ["readings", readings({ electricity: { totalWh: "18446744073709551615", energyWh: [1] } })],
    ["birth", up({ birth: { intervalS: 2 ** 31, batch: 1 } })],
    ["birth", up({ birth: { firmware: "fw\u0000", intervalS: 1, batch: 2 } })],
    ["alarm", up({ alarm: { type: 1, active: true, value: "-9223372036854775808" } })],
    ["readings", Buffer.from("0aff", "hex")],
  ]
}

const start = async (log: ReturnType<typeof captureLog>["log"]) =>
  startService({
    mqttUrl: MOSQUITTO_URL,
    databaseUrl: PG_URL,
    storeOptions: { schema },
    clientId,
    httpPort: 0,
    log,
  })

async function publishPoison(meterId: string) {
  const pub = await mqtt.connectAsync(MOSQUITTO_URL, { clientId: uid("poisoner") })
  const list = poisons(Math.floor(Date.now() / 1000))
  for (const [kind, payload] of list) await pub.publishAsync(upTopic(meterId, kind as "readings"), payload, { qos: 1 })
  await pub.endAsync()
  return list.length
}

/** This test's dead letters: other test files publish on the same Mosquitto, and in production mode
 * their meters are unknown here, so this bridge dead-letters their frames too. */
async function ours(s: Service) {
  return (await s.store.deadLetters({ limit: 500 })).filter((l) => l.meterId !== null && meterIds.includes(l.meterId))
}

async function caughtUp(s: Service) {
  for (const d of meters)
    await waitFor(
      `${d.meter.meterId}: every generated frame stored`,
      async () => {
        const stored = new Set((await s.store.readings(d.meter.meterId)).map((r) => `${r.boot}/${r.seq}`))
        const gen = [...generated(d.meter).keys()]
        return gen.length > 0 && gen.every((k) => stored.has(k))
      },
      60_000,
      250,
    )
}

test("poison frames amid real-firmware traffic are dead-lettered; every reading is stored, also across a restart with poison in the session", async () => {
  const first = captureLog()
  svc = await start(first.log)
  for (const id of meterIds) await svc.store.registerMeter(id, new Date()) // `citymeter provision`
  for (const d of meters) await d.meter.start()
  for (const d of meters) d.startDriving()
  await waitFor("frames of every meter", async () => meters.every((d) => generated(d.meter).size >= 2), 30_000)

  // poison in the middle of the traffic
  const sent = await publishPoison(meterIds[0])
  await waitFor("poison dead-lettered", async () => (await ours(svc!)).length >= sent)
  await sleep(2000)
  await caughtUp(svc)

  // the bridge goes away; poison and real frames queue in its session at the broker
  await svc.stop()
  svc = undefined
  const queued = await publishPoison(meterIds[1])
  await sleep(3000)

  const second = captureLog()
  const t0 = Date.now()
  svc = await start(second.log) // resolves once subscribed: it must come up with poison waiting
  const upMs = Date.now() - t0
  expect((await fetch(`${svc.httpUrl}/healthz`)).status).toBe(200)
  await waitFor("ready", async () => (await fetch(`${svc!.httpUrl}/readyz`)).status === 200, 30_000)
  await waitFor("poison from the session dead-lettered", async () => (await ours(svc!)).length >= sent + queued, 30_000)
  await sleep(2000)
  await caughtUp(svc)

  for (const d of meters) d.stopDriving()
  await sleep(3000)
  await caughtUp(svc)
  const letters = await ours(svc)
  const reasons: Record<string, number> = {}
  for (const l of letters) reasons[l.reason] = (reasons[l.reason] ?? 0) + 1
  let generatedTotal = 0
  let storedTotal = 0
  for (const d of meters) {
    const gen = generated(d.meter) // before the rows: a running meter makes more meanwhile
    const rows = (await svc.store.readings(d.meter.meterId, { limit: 100_000 })).map(
      (r) => ({ ...r, ts: r.ts.toISOString() }) as ApiReading,
    )
    const c = compare(d.meter, rows, gen)
    expect(c.missing, d.meter.meterId).toBe(0)
    expect(c.duplicates, d.meter.meterId).toBe(0)
    generatedTotal += c.generated
    storedTotal += c.stored
  }
  console.log(
    `poison run: ${sent + queued} poison frames (${queued} waiting in the session at restart) → dead letters ${JSON.stringify(reasons)}; ` +
      `real intervals generated ${generatedTotal}, stored ${storedTotal}; restart subscribed in ${upMs} ms`,
  )
  expect(letters.length, JSON.stringify(reasons)).toBe(sent + queued)
  expect(storedTotal).toBe(generatedTotal)
  // nothing from a poison frame reached the data tier: no phantom meters, only the real ones
  const ids = (await svc.store.listMeters()).map((m) => m.meterId)
  expect(ids.sort()).toEqual([...meterIds].sort())
}, 180_000)
