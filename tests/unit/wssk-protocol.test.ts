// The WSSK protocol's pure parts (bridge/src/wssk/protocol.ts) against a device side written here
// from the protocol description (docs/ota-spike.md), not from the module: HKDF-SHA256 session
// key, AES-256-CCM with a 4-byte tag and per-direction counter nonces, the 32-zero auth, masked
// device frames and the endpoint's unmasked ones, the connection string the runtime parses.
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto"
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, test } from "vitest"
import {
  DEPLOY_CHUNK,
  DEVICE_MAX_MESSAGE,
  WsReader,
  WsskSession,
  bumpNonce,
  connectionString,
  deviceRandomOf,
  isAuth,
  meterIdOfPath,
  wsAccept,
  wsFrame,
  type WsEvent,
} from "../../bridge/src/wssk/protocol.js"
import { CONNSTR_FILE, maskedConnstr, readLinkKey, writeLink, wsskBase } from "../../cli/wssk.js"

/** The device's side: its own key derivation and nonces (device → endpoint 01 00…, endpoint → device 02 00…). */
function device(linkKey: Buffer, deviceRandom: Buffer, hello: Buffer) {
  expect(hello.length).toBe(24)
  expect(hello.readUInt32LE(0)).toBe(0xcee428ca)
  expect(hello.readUInt32LE(4)).toBe(2)
  const key = Buffer.from(
    hkdfSync("sha256", linkKey, Buffer.alloc(0), Buffer.concat([deviceRandom, hello.subarray(8)]), 32),
  )
  let tx = 0
  let rx = 0
  const nonce = (dir: number, n: number) => {
    const b = Buffer.alloc(13)
    b[0] = dir
    b.writeUInt32BE(n, 9)
    return b
  }
  return {
    seal(plain: Buffer) {
      const c = createCipheriv("aes-256-ccm", key, nonce(1, tx++), { authTagLength: 4 })
      return Buffer.concat([c.update(plain), c.final(), c.getAuthTag()])
    },
    open(msg: Buffer): Buffer | undefined {
      const d = createDecipheriv("aes-256-ccm", key, nonce(2, rx++), { authTagLength: 4 })
      d.setAuthTag(msg.subarray(msg.length - 4))
      const plain = d.update(msg.subarray(0, msg.length - 4))
      try {
        d.final()
        return plain
      } catch {
        return undefined
      }
    },
  }
}

/** A masked client frame, as the device sends it. */
function masked(opcode: number, payload: Buffer, fin = true) {
  const mask = randomBytes(4)
  const n = payload.length
  const head =
    n < 126
      ? Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | n])
      : Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | 126, n >> 8, n & 0xff])
  const body = Buffer.from(payload.map((b, i) => b ^ mask[i & 3]))
  return Buffer.concat([head, mask, body])
}

describe("WSSK protocol", () => {
  test("the handshake: each side opens the other's auth only under the same link key; nonces count per direction", () => {
    const linkKey = randomBytes(32)
    const deviceRandom = randomBytes(16)
    const ep = new WsskSession(linkKey, deviceRandom)
    const [hello, auth] = ep.opening()
    const dev = device(linkKey, deviceRandom, hello)
    expect(dev.open(auth)).toEqual(Buffer.alloc(32)) // the endpoint proved the key
    const devAuth = dev.seal(Buffer.alloc(32))
    const opened = ep.open(devAuth)!
    expect(isAuth(opened)).toBe(true) // the device proved it
    // both ways after the auth: the command's first byte, the counters advanced on both sides
    expect(ep.open(dev.seal(Buffer.from([0x93, 1, 2])))).toEqual(Buffer.from([0x93, 1, 2]))
    expect(dev.open(ep.seal(Buffer.from([0x94, 9])))).toEqual(Buffer.from([0x94, 9]))
    // a replayed message does not open (its nonce is spent), and the session stays broken
    expect(ep.open(devAuth)).toBeUndefined()
    expect(ep.open(dev.seal(Buffer.from([0x92])))).toBeUndefined()
  })

  test("a device with another key: its auth does not open, nor does it open ours", () => {
    const deviceRandom = randomBytes(16)
    const ep = new WsskSession(randomBytes(32), deviceRandom)
    const [hello, auth] = ep.opening()
    const dev = device(randomBytes(32), deviceRandom, hello)
    expect(dev.open(auth)).toBeUndefined()
    expect(ep.open(dev.seal(Buffer.alloc(32)))).toBeUndefined()
    // and 32 zero bytes are the auth, nothing else is
    expect(isAuth(Buffer.alloc(32))).toBe(true)
    expect(isAuth(Buffer.alloc(31))).toBe(false)
    expect(isAuth(Buffer.concat([Buffer.alloc(31), Buffer.from([1])]))).toBe(false)
  })

  test("nonces increment big-endian and wrap", () => {
    const n = Buffer.from([2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff])
    bumpNonce(n)
    expect([...n.subarray(11)]).toEqual([1, 0])
    const all = Buffer.alloc(3, 0xff)
    bumpNonce(all)
    expect([...all]).toEqual([0, 0, 0])
  })

  test("the endpoint's frames: unmasked binary, minimally length-encoded; a deploy chunk's message fits the device's buffer", () => {
    expect([...wsFrame(2, Buffer.alloc(125)).subarray(0, 2)]).toEqual([0x82, 125])
    expect([...wsFrame(2, Buffer.alloc(126)).subarray(0, 4)]).toEqual([0x82, 126, 0, 126])
    expect(() => wsFrame(2, Buffer.alloc(0x10000))).toThrow(/64 KB/)
    // 0x95 + 224 bytes + 4-byte tag + 4-byte header: 233 of the 270
    const s = new WsskSession(randomBytes(32), randomBytes(16))
    const chunkMsg = wsFrame(2, s.seal(Buffer.alloc(1 + DEPLOY_CHUNK)))
    expect(chunkMsg.length).toBe(233)
    expect(chunkMsg.length).toBeLessThanOrEqual(DEVICE_MAX_MESSAGE)
    // RFC 6455's example key
    expect(wsAccept("dGhlIHNhbXBsZSBub25jZQ==")).toBe("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
  })

  test("the device's frames: masked, split anywhere, fragmented; pings and close; unmasked or oversized ones end the stream", () => {
    const r = new WsReader(300)
    const a = randomBytes(200)
    const stream = Buffer.concat([
      masked(2, a.subarray(0, 50), false),
      masked(9, Buffer.from("hi")),
      masked(0, a.subarray(50)),
      masked(2, Buffer.from([0x92])),
    ])
    const events: WsEvent[] = []
    for (let i = 0; i < stream.length; i += 7) events.push(...r.push(stream.subarray(i, i + 7)))
    expect(events).toEqual([
      { kind: "ping", data: Buffer.from("hi") },
      { kind: "message", data: a },
      { kind: "message", data: Buffer.from([0x92]) },
    ])
    expect(r.push(masked(8, Buffer.from([0x03, 0xe8])))).toEqual([{ kind: "close", code: 1000 }])
    expect(r.push(masked(2, Buffer.from([1])))).toEqual([]) // nothing after the close

    expect(new WsReader().push(wsFrame(2, Buffer.from([1])))).toEqual([{ kind: "error", why: "unmasked device frame" }])
    const big = new WsReader(300)
    expect(big.push(masked(2, Buffer.alloc(301)).subarray(0, 8))).toEqual([
      { kind: "error", why: "a device message over 300 bytes" },
    ])
    // fragments count together
    const frag = new WsReader(300)
    expect(frag.push(Buffer.concat([masked(2, Buffer.alloc(200), false), masked(0, Buffer.alloc(101))]))).toEqual([
      { kind: "error", why: "a device message over 300 bytes" },
    ])
    expect(new WsReader().push(masked(1, Buffer.from("text")))).toEqual([{ kind: "error", why: "opcode 1" }])
  })

  test("the connection string the runtime parses, the path a meter's link opens, the device's random", () => {
    const key = Buffer.alloc(32, 0xab)
    expect(connectionString("ws://bridge.city.example:8081", "hall-7.w1", key)).toBe(
      `ws://wssk:${"ab".repeat(32)}@bridge.city.example:8081/wssk/hall-7.w1`,
    )
    expect(connectionString("wss://bridge.city.example", "m1", key)).toBe(
      `wss://wssk:${"ab".repeat(32)}@bridge.city.example/wssk/m1`,
    )
    expect(() => connectionString("http://x:1", "m1", key)).toThrow(/ws:\/\//)
    expect(() => connectionString("ws://x:1/path", "m1", key)).toThrow(/no credentials, path/)
    expect(() => connectionString("ws://x:1", "m1", key.subarray(1))).toThrow(/32 bytes/)
    expect(meterIdOfPath("/wssk/hall-7.w1")).toBe("hall-7.w1")
    expect(meterIdOfPath("/wssk/")).toBeUndefined()
    expect(meterIdOfPath("/wssk/a/b")).toBeUndefined()
    expect(meterIdOfPath("/other/a")).toBeUndefined()
    const random = randomBytes(16)
    expect(deviceRandomOf(`devs-key-${random.toString("hex")}`)).toEqual(random)
    expect(deviceRandomOf("devs-key-12")).toBeUndefined()
    expect(deviceRandomOf("chat")).toBeUndefined()
  })
})

describe("citymeter provision --wssk-url", () => {
  test("a new key per meter, its connection string in a 0600 file, read back by register; output masks the key", () => {
    expect(() => wsskBase("mqtt://x:1")).toThrow(/ws:\/\/host:port/)
    expect(() => wsskBase("ws://x:1/p")).toThrow(/without credentials, path/)
    expect(wsskBase("wss://bridge.city.example")).toBe("wss://bridge.city.example")
    const dir = mkdtempSync(join(tmpdir(), "cm-wssk-"))
    try {
      expect(readLinkKey(dir)).toBeUndefined()
      const a = writeLink(dir, "ws://10.0.0.2:8081", "hall-7.w1")
      const file = join(dir, CONNSTR_FILE)
      expect(a.file).toBe(file)
      expect(readFileSync(file, "utf8")).toBe(`ws://wssk:${a.key}@10.0.0.2:8081/wssk/hall-7.w1\n`)
      expect(statSync(file).mode & 0o777).toBe(0o600)
      expect(readLinkKey(dir)).toBe(a.key)
      expect(maskedConnstr(a.conn)).toBe("ws://wssk:****@10.0.0.2:8081/wssk/hall-7.w1")
      expect(() => writeLink(dir, "ws://10.0.0.2:8081", "hall-7.w1")).toThrow(/--force/)
      const b = writeLink(dir, "ws://10.0.0.2:8081", "hall-7.w1", true)
      expect(b.key).not.toBe(a.key)
      expect(b.key).toMatch(/^[0-9a-f]{64}$/)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
