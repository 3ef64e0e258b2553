// The mqtt.js behaviour the bridge's deferred PUBACKs stand on (bridge/src/mqtt-puback.ts): an error
// from handleMessage's callback makes mqtt.js skip its PUBACK and go on reading, and sendPuback
// (mqtt.js's private _sendPacket) acknowledges later, on the connection. Fails when an mqtt.js
// upgrade changes either.
import { Aedes } from "aedes"
import { createServer, type AddressInfo, type Server } from "node:net"
import mqtt, { MqttClient, type IPublishPacket } from "mqtt"
import { afterAll, beforeAll, expect, test } from "vitest"
import { sendPuback } from "../../bridge/src/mqtt-puback.js"
import { waitFor } from "../helpers.js"

let broker: Aedes
let server: Server
let url: string
/** The QoS 1 deliveries the broker saw acknowledged, by the receiving client's id and payload. */
const acked: string[] = []

beforeAll(async () => {
  broker = await Aedes.createBroker()
  broker.on("ack", (packet, client) => {
    acked.push(`${client.id}:${packet && "payload" in packet ? String(packet.payload) : "?"}`)
  })
  server = createServer(broker.handle)
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()))
  url = `mqtt://127.0.0.1:${(server.address() as AddressInfo).port}`
})

afterAll(async () => {
  await new Promise<void>((r) => broker.close(() => r()))
  await new Promise<void>((r) => server.close(() => r()))
})

test("mqtt.js still has the private method sendPuback calls", () => {
  expect(typeof (MqttClient.prototype as unknown as Record<string, unknown>)._sendPacket).toBe("function")
})

test("a handleMessage error skips mqtt.js's PUBACK without stopping the reading; sendPuback acknowledges later", async () => {
  // a persistent session, as the bridge has: the broker keeps the deliveries it awaits a PUBACK for
  const sub = await mqtt.connectAsync(url, { clientId: "deferring", clean: false, reconnectPeriod: 0 })
  const pub = await mqtt.connectAsync(url, { clientId: "publisher", reconnectPeriod: 0 })
  const errors: Error[] = []
  sub.on("error", (e) => errors.push(e))
  const received: IPublishPacket[] = []
  sub.handleMessage = (packet, done) => {
    received.push(packet)
    done(new Error("PUBACK deferred")) // what bridge.ts's deferredPubacks does (DEFERRED)
  }
  try {
    await sub.subscribeAsync("puback/test", { qos: 1 })
    for (const n of ["one", "two"]) await pub.publishAsync("puback/test", n, { qos: 1 })
    // the first error did not stop mqtt.js reading
    await waitFor("both deliveries", async () => received.length === 2, 5_000)
    // and it sent no PUBACK: a round trip on the connection (SUBACK after any earlier packet), then
    // a moment for the broker's asynchronous ack bookkeeping
    await sub.subscribeAsync("puback/round-trip", { qos: 1 })
    await new Promise((r) => setTimeout(r, 200))
    expect(acked).toEqual([])

    sendPuback(sub, received[0].messageId!)
    await waitFor("the first PUBACK", async () => acked.length === 1, 5_000)
    sendPuback(sub, received[1].messageId!)
    await waitFor("the second PUBACK", async () => acked.length === 2, 5_000)
    expect(acked).toEqual(["deferring:one", "deferring:two"])
    expect(errors).toEqual([])
    expect(sub.connected).toBe(true)
  } finally {
    await Promise.all([sub.endAsync(), pub.endAsync()])
  }
})
