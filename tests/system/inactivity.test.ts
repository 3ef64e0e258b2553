// Inactivity: a meter that stops sending for longer than 2 × interval × batch (+ slack) from its
// birth config is marked offline with an open INACTIVE alarm; its next frame clears both.
import { randomBytes } from "node:crypto"
import mqtt from "mqtt"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { startService, type Service } from "../../bridge/src/service.js"
import { upTopic } from "../../bridge/src/topics.js"
import { captureLog, dropSchema, STACKS, stackServices, uid, waitFor } from "../helpers.js"
import { readingsFrame, uplink as up } from "../../testkit/frames.js"

describe.each(STACKS)("inactivity on %s", (kind) => {
  let svc: Service
  let pub: mqtt.MqttClient
  const schema = `t_${randomBytes(6).toString("hex")}`
  const { log, lines } = captureLog()
  beforeAll(async () => {
    svc = await startService({
      demo: true,
      ...stackServices(kind, schema),
      clientId: uid("inact-bridge"),
      log,
      inactivityCheckMs: 200,
      inactivitySlackS: 1,
    })
    pub = await mqtt.connectAsync(svc.mqttUrl, { clientId: uid("inact-pub") })
  })
  afterAll(async () => {
    await pub?.endAsync()
    await svc?.stop()
    if (kind !== "embedded") await dropSchema(schema)
  })

  const openAlarms = async (meterId: string) =>
    (await svc.app.inject({ url: `/meters/${meterId}/alarms?open=true` })).json().alarms as {
      type: string
      source: string
      ts: string
      value: number
    }[]
  const meter = async (meterId: string) => (await svc.app.inject({ url: `/meters/${meterId}` })).json()
  const gauge = async () => (await svc.metrics.onlineMeters.get()).values[0]?.value

  test("a silent meter is marked offline with an INACTIVE alarm, cleared when its frames return", async () => {
    const meterId = uid("quiet")
    const readings = (seq: number) =>
      readingsFrame({ seq, startS: Math.floor(Date.now() / 1000) - 1, intervalS: 1, totalMl: seq })
    // expected every 1 s × batch 1: inactive after 2 × 1 × 1 + 1 s slack without a frame
    await pub.publishAsync(
      upTopic(meterId, "birth"),
      up({ boot: 1, birth: { firmware: "fw", board: "b", intervalS: 1, batch: 1, uptimeS: 1 } }),
      { qos: 1 },
    )
    await pub.publishAsync(upTopic(meterId, "readings"), readings(1), { qos: 1 })
    await waitFor("online", async () => (await meter(meterId)).online === true, 5000)
    if (kind === "embedded") await waitFor("gauge 1", async () => (await gauge()) === 1, 5000)
    // the bound runs from the meter's last frame as the bridge stored it, not from when the test looked
    const lastSeen = Date.parse((await meter(meterId)).lastSeen)

    const alarms = await waitFor("INACTIVE raised", async () => {
      const a = await openAlarms(meterId)
      return a.length ? a : undefined
    })
    // not before 2 × interval × batch + slack = 3 s of silence, and the alarm's value says how long
    const quietMs = Date.parse(alarms[0].ts) - lastSeen
    expect(quietMs).toBeGreaterThan(3000)
    expect(alarms[0].value).toBe(Math.floor(quietMs / 1000))
    expect(alarms).toMatchObject([{ type: "INACTIVE", source: "bridge", active: true }])
    expect(await meter(meterId)).toMatchObject({ online: false, inactive: true })
    expect(lines.some((l) => l.meterId === meterId && l.alarm === "INACTIVE")).toBe(true)
    if (kind === "embedded") await waitFor("gauge 0", async () => (await gauge()) === 0, 5000)

    await pub.publishAsync(upTopic(meterId, "readings"), readings(2), { qos: 1 })
    await waitFor("INACTIVE cleared", async () => (await openAlarms(meterId)).length === 0, 5000)
    expect(await meter(meterId)).toMatchObject({ online: true, inactive: false })
    const history = (await svc.app.inject({ url: `/meters/${meterId}/alarms` })).json().alarms
    expect(history.map((a: { type: string; active: boolean }) => [a.type, a.active])).toEqual([
      ["INACTIVE", true],
      ["INACTIVE", false],
    ])
    if (kind === "embedded") await waitFor("gauge 1 again", async () => (await gauge()) === 1, 5000)
  })
})
