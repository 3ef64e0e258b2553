// The broker-outage scenario needs a broker the test can stop: a private Mosquitto.
import { afterAll, expect, test } from "vitest"
import { startService, type Service } from "../../bridge/src/service.js"
import { runScenario } from "../../sim/src/scenario.js"
import { scenarios } from "../../sim/scenarios/index.js"
import { captureLog, uid } from "../helpers.js"
import { MosquittoProcess } from "../../testkit/infra.js"
import { finalRows, scenarioMeter } from "../scenario-util.js"

let svc: Service | undefined
let broker: MosquittoProcess | undefined
const stops: (() => Promise<void>)[] = []
afterAll(async () => {
  for (const s of stops) await s()
  await svc?.stop()
  await broker?.stop()
})

test("broker outage: the meter keeps measuring and replays its queue; every millilitre stored once", async () => {
  const s = scenarios["broker-outage"]
  broker = await MosquittoProcess.create()
  svc = await startService({
    demo: true,
    mqttUrl: broker.url,
    databaseUrl: "pglite:memory",
    clientId: uid("bridge"),
    log: captureLog().log,
  })
  const meter = scenarioMeter(s, broker.url)
  stops.push(() => meter.stop())
  const r = await runScenario(s, meter, { stopBroker: () => broker!.stop(), startBroker: () => broker!.start() })
  const rows = await finalRows({ ...svc, kind: "embedded", lines: [] }, r)
  expect(rows.some((x) => x.backfill)).toBe(true)
  const seqs = [...new Set(rows.map((x) => x.seq))].sort((a, b) => a - b)
  expect(seqs).toEqual(seqs.map((_, i) => seqs[0] + i))
  expect(rows[rows.length - 1].waterTotalMl).toBe(r.waterMl)
})
