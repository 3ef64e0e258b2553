// The bridge's WSSK endpoint (bridge/src/wssk/) on a free loopback port, for tests and spikes,
// with keys given per path (`/wssk/<meter id>`) instead of the registry's, and what tests assert on:
// every attempt's outcome and every link that came up, in order. One implementation of the
// protocol: this file only records.
import { WsskEndpoint as BridgeEndpoint, type WsskAttempt } from "../bridge/src/wssk/endpoint.js"
import { WsskLink } from "../bridge/src/wssk/link.js"
import { LINK_PATH_PREFIX, connectionString } from "../bridge/src/wssk/protocol.js"

export { STREAM_DMESG, WSSK, DEVICE_MAX_MESSAGE } from "../bridge/src/wssk/protocol.js"
export { WsskLink, type WsskAttempt }

export interface WsskEndpointOptions {
  /** Each device's 32-byte key, by request path (`/wssk/<meter id>`). */
  keys: Map<string, Buffer>
  /** Called when a device's auth verified. */
  onLink?: (link: WsskLink) => void
}

export class WsskEndpoint {
  private constructor(
    readonly endpoint: BridgeEndpoint,
    readonly links: WsskLink[],
    readonly attempts: WsskAttempt[],
  ) {}

  get port() {
    return this.endpoint.port
  }

  static async start(opts: WsskEndpointOptions): Promise<WsskEndpoint> {
    const links: WsskLink[] = []
    const attempts: WsskAttempt[] = []
    const endpoint = await BridgeEndpoint.start({
      linkKey: async (meterId) => opts.keys.get(LINK_PATH_PREFIX + meterId),
      port: 0,
      host: "127.0.0.1",
      maxLinks: 16,
      handshakeMs: 5000,
      onAttempt: (a) => attempts.push(a),
      onLink: (l) => {
        links.push(l)
        opts.onLink?.(l)
      },
    })
    return new WsskEndpoint(endpoint, links, attempts)
  }

  /** The connection string the runtime parses, for the device at `path` (/wssk/<meter id>). */
  connectionString(path: string, key: Buffer) {
    return connectionString(`ws://127.0.0.1:${this.port}`, path.slice(LINK_PATH_PREFIX.length), key)
  }

  /** Resolves with the next link that authenticates (or one that already did after `since`). */
  async nextLink(since = 0, timeoutMs = 20000): Promise<WsskLink> {
    const t0 = performance.now()
    for (;;) {
      const l = this.links.find((x) => x.times.auth! >= since)
      if (l) return l
      if (performance.now() - t0 > timeoutMs) {
        const seen = this.attempts.map((a) => `${a.path} ${a.outcome} ${a.detail ?? ""}`).join("; ")
        throw new Error(`WSSK: no link in ${timeoutMs} ms (${seen || "no upgrade request"})`)
      }
      await new Promise((r) => setTimeout(r, 20))
    }
  }

  close() {
    return this.endpoint.close()
  }
}
