// The embedded default broker (aedes, MQTT 3.1.1), for running citymeter without a Mosquitto.
import { createServer, type AddressInfo } from "node:net"
import { Aedes } from "aedes"

export interface EmbeddedBroker {
  url: string
  port: number
  close(): Promise<void>
}

export async function startEmbeddedBroker(port = 0, host = "127.0.0.1"): Promise<EmbeddedBroker> {
  const aedes = await Aedes.createBroker()
  const server = createServer(aedes.handle)
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(port, host, () => resolve())
  })
  const actual = (server.address() as AddressInfo).port
  return {
    url: `mqtt://${host}:${actual}`,
    port: actual,
    close: () =>
      new Promise<void>((resolve) => {
        // destroy client sockets so close() does not wait for idle meters
        aedes.close(() => server.close(() => resolve()))
      }),
  }
}
