// The bridge's persistent session: a backlog larger than Mosquitto's default queue (1000 QoS 1
// messages) built up while the bridge is away is delivered and stored in full when it returns.
import mqtt from "mqtt"
import { afterAll, expect, test } from "vitest"
import { startService, type Service } from "../../bridge/src/service.js"
import { upTopic } from "../../bridge/src/topics.js"
import { captureLog, dropSchema, PG_URL, uid, waitFor } from "../helpers.js"
import { MosquittoProcess } from "../../testkit/infra.js"
import { readingsFrame } from "../../testkit/frames.js"

const FRAMES = 2500

let svc: Service | undefined
let broker: MosquittoProcess | undefined
const schema = `t_${uid("b").slice(2).replace(/-/g, "_")}`
afterAll(async () => {
  await svc?.stop()
  await broker?.stop()
  await dropSchema(schema)
})

test(`a ${FRAMES}-frame backlog queued for an offline bridge is stored in full`, async () => {
  broker = await MosquittoProcess.create()
  const clientId = uid("burst-bridge")
  const start = () =>
    startService({
      demo: true,
      mqttUrl: broker!.url,
      databaseUrl: PG_URL,
      storeOptions: { schema },
      clientId,
      log: captureLog().log,
    })
  svc = await start()
  await svc.stop() // the session (clean start off) stays at the broker
  svc = undefined

  const pub = await mqtt.connectAsync(broker.url, { clientId: uid("burst-pub") })
  const nowS = Math.floor(Date.now() / 1000)
  const meters = 50
  for (let i = 0; i < FRAMES; i++) {
    const meterId = `burst-${i % meters}`
    const seq = Math.floor(i / meters) + 1
    const payload = readingsFrame({ seq, startS: nowS - 3600, totalMl: seq })
    pub.publish(upTopic(meterId, "readings"), Buffer.from(payload), { qos: 1 })
  }
  await waitFor(
    "publisher drained",
    async () => pub.getLastMessageId() !== undefined && Object.keys(pub.outgoing).length === 0,
    60_000,
  )
  await pub.endAsync()

  const t0 = Date.now()
  svc = await start()
  const stored = await waitFor(
    "backlog stored",
    async () => {
      const v = (await svc!.metrics.framesStored.get()).values.find((x) => x.labels.kind === "readings")?.value ?? 0
      return v >= FRAMES ? v : false
    },
    120_000,
    250,
  )
  console.log(`burst: ${FRAMES} queued frames stored in ${Date.now() - t0} ms after the bridge returned`)
  expect(stored).toBe(FRAMES)
  const rows = await svc.store.readings("burst-7")
  expect(rows).toHaveLength(FRAMES / meters)
  expect((await svc.metrics.framesDuplicate.get()).values[0]?.value ?? 0).toBe(0)
})
