// Issue 23 items 2, 5 and 7 on the meter: the maintenance window of a fleet update, driven by the
// real firmware. The bridge's route sends a sealed UpdateWindow; the meter ends its MQTT session,
// arms the DeviceScript runtime's own cloud link (WSSK) through the runtime's Cloud Configuration
// service, and a test endpoint (testkit/wssk-endpoint.ts) sees the link come up under the link's
// key and asks 0x93 for the program's hash. When the window ends the meter disarms the link and
// goes back to MQTT; the frames it made meanwhile waited in its flash queue and are stored once.
// A replay of the sealed downlink, or an unsealed one, opens no window.
import { createHash, randomBytes } from "node:crypto"
import { readFileSync } from "node:fs"
import mqtt from "mqtt"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { encodeDownlink } from "../../bridge/src/codec/downlink.js"
import { citymeter } from "../../bridge/src/gen/citymeter.js"
import { downTopic } from "../../bridge/src/topics.js"
import { SimMeter } from "../../sim/src/meter.js"
import { paths } from "../../sim/src/paths.js"
import { fstorValue, readFstor } from "../../testkit/fstor.js"
import { WSSK, WsskEndpoint } from "../../testkit/wssk-endpoint.js"
import { compare, generated, sleep } from "../fault-util.js"
import { apiReadings, startStack, uid, waitFor, type TestStack } from "../helpers.js"

const OPS = "ops-token"
const WINDOW_S = 10

describe("an update window, driven by the real firmware", () => {
  const meterId = uid("upd")
  const path = `/wssk/${meterId}`
  const sealKey = randomBytes(32)
  const linkKey = randomBytes(32)
  /** Firmware lines with the time they came (performance.now()). */
  const timed: { at: number; line: string }[] = []
  const downlinks: { at: number; payload: Buffer }[] = []
  let stack: TestStack
  let ep: WsskEndpoint
  let meter: SimMeter
  let spy: mqtt.MqttClient
  let drive: NodeJS.Timeout | undefined
  let water = 20_000

  const at = (re: RegExp) => timed.filter((l) => re.test(l.line)).map((l) => l.at)
  const post = (body: unknown, token: string | null = OPS, id = meterId) =>
    stack.app.inject({
      method: "POST",
      url: `/meters/${id}/update-window`,
      headers: token ? { authorization: `Bearer ${token}` } : {},
      payload: body as object,
    })

  beforeAll(async () => {
    ep = await WsskEndpoint.start({ keys: new Map([[path, linkKey]]) })
    stack = await startStack("embedded", { apiTokens: { ops: OPS } })
    await stack.store.registerMeter(meterId, new Date(), { policy: "sealed", key: sealKey })
    spy = await mqtt.connectAsync(stack.mqttUrl, { clientId: uid("spy") })
    await spy.subscribeAsync(downTopic(meterId, "update"), { qos: 1 })
    spy.on("message", (_t, payload) => downlinks.push({ at: performance.now(), payload: Buffer.from(payload) }))
    meter = new SimMeter({
      meterId,
      water: "register", // runs the bytecode `npm run build:firmware` wrote: its SHA-256 is 0x93's answer
      settings: {
        MQTT_HOST: "127.0.0.1",
        MQTT_PORT: Number(new URL(stack.mqttUrl).port),
        INTERVAL_S: 1,
        BATCH: 2,
        SEAL_KEY: sealKey.toString("hex"),
      },
      log: (line) => timed.push({ at: performance.now(), line }),
    })
    meter.setWater({ volumeMl: water })
    meter.setElectricity({ energyWh: 100, powerW: 400, voltageDv: 2300 })
    meter.setPressure(300_000)
    await meter.start()
    drive = setInterval(() => meter.setWater({ volumeMl: (water += 25) }), 100)
  })
  afterAll(async () => {
    clearInterval(drive)
    await meter?.stop()
    await spy?.endAsync()
    await stack?.stop()
    await ep?.close()
  })

  test("the window: MQTT ends, the link comes up under its key and answers 0x93, then MQTT resumes and every frame is stored once", async () => {
    // at boot the firmware disarms the runtime's link before its first MQTT connect
    await waitFor("connected", async () => at(/citymeter: connected/).length >= 1, 30_000)
    const disarmed = at(/citymeter: runtime cloud link disarmed/)
    expect(disarmed.length).toBe(1)
    expect(disarmed[0]).toBeLessThan(at(/citymeter: connected/)[0])
    await waitFor("frames stored", async () => (await apiReadings(stack, meterId)).length >= 4, 30_000)

    // the route, in the OpenAPI document: ops scope, a well-formed connection string, a sealed meter
    const doc = (await stack.app.inject({ url: "/openapi.json" })).json()
    const op = doc.paths["/meters/{id}/update-window"].post
    expect(op.requestBody.content["application/json"].schema.properties.conn.maxLength).toBe(120)
    expect(op.requestBody.content["application/json"].schema.required).toEqual(["conn", "windowS"])
    const conn = ep.connectionString(path, linkKey)
    expect((await post({ conn, windowS: WINDOW_S }, null)).statusCode).toBe(401)
    expect((await post({ conn, windowS: WINDOW_S }, "wrong")).statusCode).toBe(401)
    expect((await post({ conn: conn.replace("ws://", "wss://"), windowS: WINDOW_S })).statusCode).toBe(400)
    expect((await post({ conn, windowS: 5 })).statusCode).toBe(400)
    const openId = uid("open")
    await stack.store.registerMeter(openId, new Date(), { policy: "open" })
    expect((await post({ conn, windowS: WINDOW_S }, OPS, openId)).statusCode).toBe(400)
    const sentAt = performance.now()
    const res = await post({ conn, windowS: WINDOW_S })
    expect(res.statusCode).toBe(202)
    expect(res.json()).toEqual({ meterId, sent: "update", windowS: WINDOW_S })
    // the link's key is in no answer, no log line, and not in the clear on the broker
    const keyHex = linkKey.toString("hex")
    expect(JSON.stringify(stack.lines)).not.toContain(keyHex)
    await waitFor("the downlink on the broker", async () => downlinks.length >= 1, 5_000)
    const sealed = downlinks[0].payload
    expect(citymeter.v1.Downlink.decode(sealed).body).toBe("sealed")
    expect(sealed.toString("latin1")).not.toContain(keyHex)

    // the meter leaves MQTT; its socket goes to the runtime's link, which authenticates under the
    // link's key (the endpoint refuses any other) and answers 0x93 with the program's SHA-256
    const link = await ep.nextLink(sentAt, 15_000)
    expect(link.path).toBe(path)
    const left = at(/citymeter: update window of 10 s: leaving MQTT/)
    expect(left.length).toBe(1)
    expect(link.times.auth!).toBeGreaterThan(left[0])
    const hash = await link.request(WSSK.GetHash)
    expect(hash.payload.toString("hex")).toBe(createHash("sha256").update(readFileSync(paths.bytecode)).digest("hex"))
    expect(at(/citymeter: connected/).length).toBe(1)
    // the runtime stored the string raw where it reads it at boot
    expect(fstorValue(meter.flashImage, readFstor(meter.flashImage)!, "wssk_connstr")?.toString()).toBe(conn)

    // frames made while the link holds the socket: queued, none stored during the window
    await waitFor(
      "two frames in the window",
      async () => at(/citymeter: frame boot=/).some((t) => t > link.times.auth! + 2000),
      10_000,
    )
    const seqOf = (line: string) => Number(/seq=(\d+)/.exec(line)![1])
    const framesBetween = (from: number, to: number) =>
      timed.filter((l) => l.at > from && l.at < to && /citymeter: frame boot=/.test(l.line)).map((l) => seqOf(l.line))
    const early = framesBetween(link.times.auth!, performance.now())
    expect(early.length).toBeGreaterThanOrEqual(1)
    const storedSeqs = () => apiReadings(stack, meterId).then((rows) => new Set(rows.map((r) => r.seq)))
    const storedEarly = await storedSeqs()
    for (const s of early) expect(storedEarly.has(s), `seq ${s} stored during the window`).toBe(false)

    // the window ends: the link is disarmed (closed, the string deleted) before MQTT is back
    await waitFor("MQTT back", async () => at(/citymeter: connected/).length >= 2, 30_000)
    const closed = at(/citymeter: update window closed, back to MQTT/)
    expect(closed.length).toBe(1)
    expect(closed[0] - link.times.auth!).toBeGreaterThanOrEqual(WINDOW_S * 1000 - 1000)
    expect(link.open).toBe(false)
    expect(link.times.closed!).toBeLessThan(at(/citymeter: connected/)[1])
    expect(fstorValue(meter.flashImage, readFstor(meter.flashImage)!, "wssk_connstr")?.length).toBe(0)

    // every frame made before, during and after the window is stored, once
    const gen = generated(meter)
    await waitFor(
      "the queue caught up",
      async () => compare(meter, await apiReadings(stack, meterId), gen).missing === 0,
      30_000,
    )
    const c = compare(meter, await apiReadings(stack, meterId), gen)
    expect(c).toEqual({ generated: c.stored, stored: c.stored, duplicates: 0, missing: 0 })
    // the frames made while the link was up: all stored (once: compare above)
    const inWindow = framesBetween(link.times.auth!, link.times.closed!)
    expect(inWindow.length).toBeGreaterThanOrEqual(WINDOW_S / 2 - 1) // a frame every 2 s
    const stored = await storedSeqs()
    for (const s of inWindow) expect(stored.has(s), `seq ${s}`).toBe(true)
    console.log(
      `update window: link up ${Math.round(link.times.auth! - left[0])} ms after leaving MQTT, closed ` +
        `${Math.round(link.times.closed! - link.times.auth!)} ms later; ${inWindow.length} frames made while it was up, ` +
        `all stored once; MQTT back ${Math.round(at(/citymeter: connected/)[1] - closed[0])} ms after the window closed`,
    )

    // a replay of the sealed downlink and an unsealed one (anyone with broker rights): no window
    const replayAt = performance.now()
    await spy.publishAsync(downTopic(meterId, "update"), sealed, { qos: 1 })
    const open = encodeDownlink({ update: { conn, windowS: WINDOW_S } })
    await spy.publishAsync(downTopic(meterId, "update"), Buffer.from(open), { qos: 1 })
    const refused = () =>
      timed
        .filter((l) => l.at > replayAt)
        .map((l) => /downlinks refused \(unsealed, forged or replayed\): (\d+)/.exec(l.line))
        .reduce((n, m) => n + (m ? Number(m[1]) : 0), 0)
    await waitFor("both refused", async () => refused() >= 2, 15_000)
    await sleep(2000)
    expect(at(/leaving MQTT/).length).toBe(1)
    expect(ep.links.filter((l) => l.times.upgrade > replayAt)).toEqual([])
  }, 60_000)
})
