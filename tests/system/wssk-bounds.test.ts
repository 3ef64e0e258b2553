// The bridge's WSSK endpoint's bounds and failure paths, against a device client written here
// over a plain TCP socket (no VM: these are the cases the runtime does not produce on demand):
// the handshake timeout, one link per meter, the link limit, an oversized device message, a
// request the device does not answer, a deploy the device refuses.
import { randomBytes } from "node:crypto"
import { connect, type Socket } from "node:net"
import { afterEach, describe, expect, test } from "vitest"
import { WsskEndpoint, type RefusalReason } from "../../bridge/src/wssk/endpoint.js"
import { WSSK, bumpNonce, firstNonce, openMessage, sealMessage, sessionKey } from "../../bridge/src/wssk/protocol.js"
import { waitFor } from "../helpers.js"

/** A device: upgrade, then (unless told not to) the auth; answers 0x93 with `hash`, 0x94 with 0xff. */
async function device(port: number, meterId: string, key: Buffer, o: { auth?: boolean; hash?: Buffer } = {}) {
  const sock: Socket = connect(port, "127.0.0.1")
  await new Promise((r) => sock.once("connect", r))
  const random = randomBytes(16)
  sock.write(
    `GET /wssk/${meterId} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n` +
      `Sec-WebSocket-Protocol: devs-key-${random.toString("hex")}\r\n\r\n`,
  )
  const d = { sock, status: 0, closed: false, session: undefined as Buffer | undefined, received: [] as Buffer[] }
  const tx = firstNonce("device")
  const rx = firstNonce("endpoint")
  const send = (plain: Buffer) => {
    const payload = sealMessage(d.session!, tx, plain)
    bumpNonce(tx)
    sendRaw(payload)
  }
  const sendRaw = (payload: Buffer) => {
    const mask = randomBytes(4)
    const n = payload.length
    const head = n < 126 ? Buffer.from([0x82, 0x80 | n]) : Buffer.from([0x82, 0x80 | 126, n >> 8, n & 0xff])
    sock.write(Buffer.concat([head, mask, Buffer.from(payload.map((b, i) => b ^ mask[i & 3]))]))
  }
  let buf = Buffer.alloc(0)
  sock.on("close", () => (d.closed = true))
  sock.on("error", () => {})
  sock.on("data", (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk])
    if (!d.status) {
      const end = buf.indexOf("\r\n\r\n")
      if (end < 0) return
      d.status = Number(/^HTTP\/1\.1 (\d+)/.exec(buf.subarray(0, end).toString())![1])
      buf = buf.subarray(end + 4)
    }
    while (buf.length >= 2) {
      let len = buf[1]
      let at = 2
      if (len === 126) [len, at] = [buf.readUInt16BE(2), 4]
      if (buf.length < at + len) return
      const msg = buf.subarray(at, at + len)
      buf = buf.subarray(at + len)
      if (!d.session) {
        d.session = sessionKey(key, random, msg.subarray(8)) // the hello
        continue
      }
      const plain = openMessage(d.session, rx, msg)
      bumpNonce(rx)
      if (!plain) return sock.destroy()
      d.received.push(plain)
      if (d.received.length === 1) {
        if (o.auth !== false) send(Buffer.alloc(32)) // the endpoint's auth opened: ours
      } else if (plain[0] === WSSK.GetHash && o.hash) send(Buffer.concat([plain.subarray(0, 1), o.hash]))
      else if (plain[0] === WSSK.DeployStart) send(Buffer.from([WSSK.Error]))
    }
  })
  await waitFor("the endpoint's answer", async () => d.status || d.closed, 5000, 5)
  return Object.assign(d, { send, sendRaw })
}

describe("the WSSK endpoint's bounds", () => {
  let ep: WsskEndpoint | undefined
  afterEach(async () => {
    await ep?.close()
    ep = undefined
  })
  const keys = new Map<string, Buffer>()
  const counts = { up: 0, refused: new Map<RefusalReason, number>(), deployed: 0 }
  const refused = (r: RefusalReason) => counts.refused.get(r) ?? 0
  const start = async (maxLinks = 8, handshakeMs = 300) => {
    Object.assign(counts, { up: 0, refused: new Map(), deployed: 0 })
    ep = await WsskEndpoint.start({
      linkKey: async (id) => (id.startsWith("ghost") ? undefined : (keys.get(id) ?? null)),
      port: 0,
      host: "127.0.0.1",
      maxLinks,
      handshakeMs,
      metrics: {
        linkUp: (d) => (counts.up += d),
        authFailure: (r) => counts.refused.set(r, refused(r) + 1),
        deployed: (n) => (counts.deployed += n),
      },
    })
    return ep
  }
  const meter = (id: string) => {
    const key = randomBytes(32)
    keys.set(id, key)
    return key
  }

  test("one link per meter: a newer authenticated link replaces the older; requests time out; a refused deploy rejects", async () => {
    const e = await start()
    const key = meter("m-one")
    const hash = randomBytes(32)
    const a = await device(e.port, "m-one", key, { hash })
    await waitFor("the link", async () => e.isUp("m-one"), 2000, 5)
    expect(await e.hash("m-one")).toEqual(hash)
    expect(counts.up).toBe(1)
    const b = await device(e.port, "m-one", key) // answers no 0x93
    await waitFor("the older link to close", async () => a.closed, 2000, 5)
    expect(e.isUp("m-one")).toBe(true)
    expect(counts.up).toBe(1)
    await expect(e.hash("m-one", 200)).rejects.toThrow(/no answer to 0x93 in 200 ms/)
    await expect(e.deploy("m-one", Buffer.alloc(64))).rejects.toThrow(/refused 0x94 \(answered 0xff\)/)
    expect(counts.deployed).toBe(0)
    b.sock.destroy()
    await waitFor("the link down", async () => !e.isUp("m-one"), 2000, 5)
    expect(counts.up).toBe(0)
    await expect(e.hash("m-one")).rejects.toThrow(/no link up/)
  })

  test("a device that never sends its auth is dropped after the handshake time; unknown meters and meters without a key are refused before the hello", async () => {
    const e = await start()
    const mute = await device(e.port, "m-mute", meter("m-mute"), { auth: false })
    expect(mute.status).toBe(101)
    await waitFor("the handshake timeout", async () => mute.closed, 2000, 5)
    expect(refused("timeout")).toBe(1)
    expect(e.isUp("m-mute")).toBe(false)
    const ghost = await device(e.port, "ghost-1", randomBytes(32))
    expect(ghost.status).toBe(404)
    expect(refused("unknown_meter")).toBe(1)
    const keyless = await device(e.port, "m-keyless", randomBytes(32))
    expect(keyless.status).toBe(403)
    expect(refused("no_key")).toBe(1)
    // a wrong key: the device cannot open our auth, and ours (the endpoint's view) fails its tag
    keys.set("m-wrong", randomBytes(32))
    const wrong = await device(e.port, "m-wrong", randomBytes(32))
    await waitFor("the wrong key's end", async () => wrong.closed, 2000, 5)
    expect(refused("bad_auth") + refused("closed")).toBeGreaterThanOrEqual(1)
    expect(e.isUp("m-wrong")).toBe(false)
  })

  test("the link limit counts handshakes too; an oversized device message closes the link", async () => {
    const e = await start(2, 5000)
    const held = [await device(e.port, "m-a", meter("m-a"), { auth: false }), await device(e.port, "m-b", meter("m-b"))]
    const third = await device(e.port, "m-c", meter("m-c"))
    expect(third.status).toBe(503)
    expect(refused("busy")).toBeGreaterThanOrEqual(1)
    await waitFor("m-b's link", async () => e.isUp("m-b"), 2000, 5)
    held[1].sendRaw(Buffer.alloc(600)) // over the 512 bytes a device message may hold
    await waitFor("the oversized message's link to close", async () => held[1].closed, 2000, 5)
    expect(e.isUp("m-b")).toBe(false)
  })
})
