// Scale-out: three bridge instances share the uplink through an MQTT 5 shared subscription
// ($share/citymeter/...) on Mosquitto and write to one PostgreSQL. Every frame a test fleet
// publishes is stored exactly once, and each instance takes a share.
import { randomBytes } from "node:crypto"
import mqtt from "mqtt"
import { afterAll, expect, test } from "vitest"
import { startService, type Service } from "../../bridge/src/service.js"
import type { SqlStore } from "../../bridge/src/store/sql-store.js"
import { upTopic } from "../../bridge/src/topics.js"
import { PG_URL, captureLog, dropSchema, uid, waitFor } from "../helpers.js"
import { MosquittoProcess } from "../../testkit/infra.js"
import { readingsFrame as readingsOf } from "../../testkit/frames.js"

/** Frame `seq` of a meter: one 60 s interval of 1 mL, the total equal to seq. */
const readingsFrame = (seq: number, startS: number) => readingsOf({ seq, startS: startS + seq * 60, totalMl: seq })
const INSTANCES = 3
const METERS = 30
const SEQS = 30
const N = METERS * SEQS

const schema = `t_${randomBytes(6).toString("hex")}`
const services: Service[] = []
let broker: MosquittoProcess | undefined
afterAll(async () => {
  for (const s of services) await s.stop()
  await broker?.stop()
  await dropSchema(schema)
})

const stored = async (s: Service) =>
  (await s.metrics.framesStored.get()).values.find((v) => v.labels.kind === "readings")?.value ?? 0
const duplicates = async (s: Service) => (await s.metrics.framesDuplicate.get()).values[0]?.value ?? 0

test(`${INSTANCES} bridges on a shared subscription store ${N} frames exactly once, each taking a share`, async () => {
  broker = await MosquittoProcess.create()
  // one after the other: the first runs the migrations, the others find them done
  for (let i = 0; i < INSTANCES; i++)
    services.push(
      await startService({
        demo: true,
        mqttUrl: broker.url,
        databaseUrl: PG_URL,
        storeOptions: { schema },
        clientId: uid(`bridge${i}`),
        shareGroup: "citymeter",
        log: captureLog().log,
        inactivityCheckMs: 60_000,
      }),
    )

  const pub = await mqtt.connectAsync(broker.url, { clientId: uid("fleet") })
  const t0 = Date.now()
  const startS = Math.floor(t0 / 1000) - 3600
  for (let seq = 1; seq <= SEQS; seq++)
    for (let m = 0; m < METERS; m++) {
      pub.publish(upTopic(`fleet-${m}`, "readings"), readingsFrame(seq, startS), { qos: 1 })
    }
  await waitFor("all frames stored", async () => {
    const counts = await Promise.all(services.map(stored))
    return counts.reduce((a, b) => a + b, 0) >= N
  })
  await pub.endAsync()
  const shares = await Promise.all(services.map(stored))
  console.log(`scale-out: ${N} frames in ${Date.now() - t0} ms, shares ${shares.join(" / ")}`)

  expect(shares.reduce((a, b) => a + b, 0)).toBe(N)
  for (const s of shares) expect(s).toBeGreaterThan(N / (INSTANCES * 3)) // each took a real share
  expect((await Promise.all(services.map(duplicates))).reduce((a, b) => a + b, 0)).toBe(0)

  const db = (services[0].store as SqlStore).db
  const count = async (sql: string) => Number((await db.query<{ n: number }>(sql)).rows[0].n)
  expect(await count(`SELECT count(*) AS n FROM frames`)).toBe(N)
  expect(await count(`SELECT count(*) AS n FROM readings`)).toBe(N)
  expect(await count(`SELECT count(DISTINCT (meter_id, boot, seq)) AS n FROM readings`)).toBe(N)
  // frames of one meter were committed by different instances in any order: latest is still the newest
  const latest = (await services[1].store.latest()).filter((r) => r.meterId.startsWith("fleet-"))
  expect(latest).toHaveLength(METERS)
  for (const r of latest) expect([r.seq, r.waterTotalMl]).toEqual([SEQS, SEQS])
  const rows = await services[2].store.readings("fleet-7")
  expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: SEQS }, (_, i) => i + 1))
})

test("an instance that crashes mid-stream and returns under its client id loses nothing; nothing is stored twice", async () => {
  expect(services).toHaveLength(INSTANCES) // runs after the test above, on its broker and schema
  const victim = services[2]
  const victimId = victim.bridge!.client.options.clientId!
  const pub = await mqtt.connectAsync(broker!.url, { clientId: uid("fleet2") })
  const startS = Math.floor(Date.now() / 1000) - 3600
  const publish = (seq: number) => {
    for (let m = 0; m < METERS; m++) {
      pub.publish(upTopic(`crash-${m}`, "readings"), readingsFrame(seq, startS), { qos: 1 })
    }
  }
  for (let seq = 1; seq <= SEQS / 2; seq++) publish(seq)
  // crash: the connection drops without a clean shutdown, frames in flight are not acknowledged
  victim.bridge!.ingest.stop()
  victim.bridge!.client.end(true)
  for (let seq = SEQS / 2 + 1; seq <= SEQS; seq++) publish(seq)
  await pub.endAsync()
  await victim.store.close().catch(() => {})
  await victim.inactivity!.stop()
  await victim.app.close()

  // the instance returns under the same client id: its session's frames are delivered to it
  services[2] = await startService({
    demo: true,
    mqttUrl: broker!.url,
    databaseUrl: PG_URL,
    storeOptions: { schema },
    clientId: victimId,
    shareGroup: "citymeter",
    log: captureLog().log,
    inactivityCheckMs: 60_000,
  })
  const db = (services[0].store as SqlStore).db
  const count = async (sql: string) => Number((await db.query<{ n: number }>(sql)).rows[0].n)
  await waitFor("every crash-* frame stored", async () => {
    return (await count(`SELECT count(*) AS n FROM frames WHERE meter_id LIKE 'crash-%'`)) >= N
  })
  await new Promise((r) => setTimeout(r, 500)) // late redeliveries would show up as extra rows now
  expect(await count(`SELECT count(*) AS n FROM frames WHERE meter_id LIKE 'crash-%'`)).toBe(N)
  expect(await count(`SELECT count(*) AS n FROM readings WHERE meter_id LIKE 'crash-%'`)).toBe(N)
  // the returned instance got the frames its session kept while it was away
  const returned = await stored(services[2])
  console.log(`scale-out: the returned instance stored ${returned} frames from its session`)
  expect(returned).toBeGreaterThan(0)
})
