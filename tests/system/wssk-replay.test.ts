// Issue 23 item 7: a replayed or forged deploy command. The real firmware runs in the simulator's
// VM; its runtime links to the bridge's own WSSK endpoint through a recording relay
// (testkit/recording-relay.ts), which keeps every WebSocket frame each way and can inject frames
// into the device's stream between the endpoint's. The test knows the meter's link key, so from a
// recording (the device's random in its upgrade request, the endpoint's in its hello) it derives
// each session's key and reads both sides' messages, as an attacker holding the key would.
//   1. A recorded session: the endpoint deploys a variant of the firmware (another VERSION); its
//      0x94, 0x95 × n, 0x96 frames are kept. The firmware is then deployed back, so that a replay
//      that took would show in the program's hash.
//   2. The recorded deploy frames, raw, injected into a NEW session of the meter (after its
//      handshake and a 0x93 answered on it).
//   3. Forged frames: random ciphertext in a valid frame; the recorded 0x94's ciphertext with a bit
//      flipped; and a 0x94 sealed under THIS session's key and the very nonce the device expects
//      next, with a bit flipped (only the tag check can refuse it).
// For each: the runtime refuses it (wssk.c decrypt: the CCM tag does not verify, "tag error"),
// closes its link (raise_error → jd_websock_close → jd_tcpsock_close) and sends nothing for it;
// no deploy starts (no `mgr: deploy` line), and 0x93 over a fresh link answers the same hash.
import { createHash, randomBytes } from "node:crypto"
import { readFileSync } from "node:fs"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { startService, type Service } from "../../bridge/src/service.js"
import type { WsskLink } from "../../bridge/src/wssk/link.js"
import {
  DEPLOY_CHUNK,
  NONCE_BYTES,
  TAG_BYTES,
  WSSK,
  bumpNonce,
  connectionString,
  deviceRandomOf,
  firstNonce,
  openMessage,
  sealMessage,
  sessionKey,
  wsFrame,
} from "../../bridge/src/wssk/protocol.js"
import { SimMeter } from "../../sim/src/meter.js"
import { paths } from "../../sim/src/paths.js"
import { buildVariant, type Variant } from "../../testkit/firmware-variant.js"
import { freePort } from "../../testkit/infra.js"
import {
  RecordingRelay,
  parseWsFrame,
  webSocketUnits,
  type RelayConnection,
  type RelayUnit,
} from "../../testkit/recording-relay.js"
import { captureLog, uid, waitFor } from "../helpers.js"

const OPS = "ops-token-wssk-replay"
/** Generous: two cores, other suites beside this one. */
const LINK_MS = 30_000
const BOOT_MS = 60_000
/** Sessions a firmware MQTT attempt may take from under a step before the step fails. */
const TRIES = 8

/** One WebSocket message of a recorded session, opened when it is a sealed one. */
interface Message {
  unit: RelayUnit
  opcode: number
  /** The frame's payload (ciphertext and tag for a sealed message). */
  payload: Buffer
  /** The plain text; undefined for the hello, control frames, injected frames and what does not open. */
  plain?: Buffer
  cmd?: number
}

/**
 * A relay connection's WSSK session read with the meter's link key: the device's random from its
 * upgrade request, the endpoint's from its hello, then every sealed message each way under its
 * direction's nonce counter. Injected frames are kept apart: the endpoint did not seal them.
 */
function readSession(conn: RelayConnection, linkKey: Buffer) {
  const up = conn.of("up")
  const down = conn.of("down")
  const request = up[0]?.bytes.toString("latin1") ?? ""
  const proto = /^Sec-WebSocket-Protocol:\s*(\S+)\s*$/im.exec(request)?.[1] ?? ""
  const deviceRandom = deviceRandomOf(proto)
  const hello = down[1] ? parseWsFrame(down[1].bytes).payload : undefined
  if (!deviceRandom || !hello || !/^HTTP\/1\.1 101/.test(down[0].bytes.toString("latin1")))
    return { key: undefined, down: [] as Message[], up: [] as Message[], nextDownNonce: firstNonce("endpoint") }
  const key = sessionKey(linkKey, deviceRandom, hello.subarray(8, 24))
  const read = (units: RelayUnit[], nonce: Buffer): Message[] =>
    units.map((unit) => {
      const { opcode, payload } = parseWsFrame(unit.bytes)
      const m: Message = { unit, opcode, payload }
      if (opcode !== 0x2 || unit.injected) return m
      m.plain = openMessage(key, nonce, payload)
      bumpNonce(nonce)
      m.cmd = m.plain?.[0]
      return m
    })
  const nextDownNonce = firstNonce("endpoint")
  return {
    key,
    down: read(down.slice(2), nextDownNonce), // after the 101 and the hello
    up: read(up.slice(1), firstNonce("device")), // after the upgrade request
    /** The nonce of the endpoint's next message: the one the device expects next. */
    nextDownNonce,
  }
}

describe("a replayed or forged deploy command over WSSK (issue 23 item 7)", () => {
  let svc: Service
  let relay: RecordingRelay
  let variant: Variant
  const { log } = captureLog()
  beforeAll(async () => {
    svc = await startService({
      demo: true,
      databaseUrl: "pglite:memory",
      embeddedMqttPort: 0,
      clientId: uid("wssk-replay-bridge"),
      apiTokens: { ops: OPS },
      wssk: { port: 0, host: "127.0.0.1", handshakeMs: 5000 },
      log,
    })
    relay = await RecordingRelay.create(svc.wssk!.port, { framing: webSocketUnits })
    // the same firmware as another VERSION: other bytes, another hash, the same behaviour
    variant = await buildVariant({ board: "sim", version: "0.0.0-replay" })
  }, 240_000)
  afterAll(async () => {
    await relay?.close()
    await svc?.stop()
  })

  const ops = { authorization: `Bearer ${OPS}` }

  test("the runtime acts on no replayed, random or bit-flipped deploy frame: each fails its tag, the link closes, the program stays", async () => {
    const wssk = svc.wssk!
    const bytecode = readFileSync(paths.bytecode)
    const sha = createHash("sha256").update(bytecode).digest("hex")
    expect(variant.sha256).not.toBe(sha)
    const meterId = uid("replay")
    const key = randomBytes(32)
    expect((await svc.app.inject({ method: "PUT", url: `/meters/${meterId}`, headers: ops })).statusCode).toBe(201)
    const put = await svc.app.inject({
      method: "PUT",
      url: `/meters/${meterId}/link-key`,
      headers: ops,
      payload: { key: key.toString("hex") },
    })
    expect(put.statusCode).toBe(200)
    const conn = connectionString(`ws://127.0.0.1:${relay.port}`, meterId, key)

    /** Every VM and firmware line, in order (meter.lines is trimmed). */
    const lines: string[] = []
    const mqttPort = await freePort()
    const meter = new SimMeter({
      meterId,
      water: "register",
      // no broker: the firmware's MQTT reconnects (each takes the VM's one socket for a moment) are all it does
      settings: { MQTT_HOST: "127.0.0.1", MQTT_PORT: mqttPort },
      log: (l) => lines.push(l),
    })
    const linesFrom = (from: number, re: RegExp) => lines.slice(from).filter((l) => re.test(l))
    const DISARMED = /citymeter: runtime cloud link disarmed/
    /**
     * The firmware opened its MQTT socket (or logged what became of it): the VM has one socket, so
     * the link's went (sim/src/socket.ts sockOpen).
     */
    const MQTT_TRY = new RegExp(`^> mqtt: |connecting to tcp://127\\.0\\.0\\.1:${mqttPort}\\b`)

    /**
     * A fresh session: the connection string armed again (the runtime closes its link and opens a
     * new one, wssk_health.c set_conn_string → wsskhealth_reconnect), then the endpoint's link of it
     * and its relay connection once the device's auth verified and a 0x93 was answered on it.
     */
    const freshSession = async (what: string) => {
      const armAt = performance.now()
      const connsBefore = relay.connections.length
      await meter.setCloudConnectionString(conn)
      const link = await waitFor(
        `a new link of the meter (${what})`,
        async () => {
          const l = wssk.link(meterId)
          return l && l.times.upgrade > armAt ? l : undefined
        },
        LINK_MS,
        20,
      )
      const c = relay.connections
        .slice(connsBefore)
        .filter((x) => x.open && x.of("up").length >= 2)
        .at(-1)
      if (!c) throw new Error(`no relay connection for the new link (${what})`)
      const hash = await link.hash()
      return { link, conn: c, hash: hash.toString("hex") }
    }
    /** Sessions a firmware MQTT attempt took, started again (for the report). */
    let taken = 0
    /** Runs fn on a fresh session; a session a firmware MQTT attempt took is started again. */
    const onSession = async <T>(
      what: string,
      fn: (s: { link: WsskLink; conn: RelayConnection; hash: string }) => Promise<T>,
    ): Promise<T> => {
      for (let tries = 1; ; tries++) {
        const from = lines.length
        try {
          return await fn(await freshSession(what))
        } catch (e) {
          if (tries >= TRIES || !linesFrom(from, MQTT_TRY).length) throw e
          taken++
        }
      }
    }
    /** Arms the link after the program's boot disarmed it (armed before, the disarm would clear it). */
    const booted = async (what: string, disarmsBefore: number) =>
      waitFor(
        `the boot of ${what} disarming the link`,
        async () => linesFrom(0, DISARMED).length > disarmsBefore,
        BOOT_MS,
      )

    try {
      await meter.start()
      await meter.waitForLine(/citymeter: meter .* boot \d+/, BOOT_MS)
      await booted("the firmware", 0)

      // 1. the recorded session: the endpoint deploys the variant
      let disarms = linesFrom(0, DISARMED).length
      const recorded = await onSession("the recorded deploy", async (s) => {
        expect(await s.link.deploy(variant.bytes)).toEqual({ sha256: variant.sha256, bytes: variant.size })
        return s.conn
      })
      await booted("the variant", disarms)
      const rec = readSession(recorded, key)
      const deployMsgs = rec.down.filter(
        (m) => m.cmd === WSSK.DeployStart || m.cmd === WSSK.DeployWrite || m.cmd === WSSK.DeployFinish,
      )
      const chunks = Math.ceil(variant.size / DEPLOY_CHUNK)
      expect(deployMsgs.map((m) => m.cmd)).toEqual([
        WSSK.DeployStart,
        ...Array<number>(chunks).fill(WSSK.DeployWrite),
        WSSK.DeployFinish,
      ])
      expect(deployMsgs[0].plain!.readUInt32LE(1)).toBe(variant.size)
      expect(Buffer.concat(deployMsgs.slice(1, -1).map((m) => m.plain!.subarray(1))).equals(variant.bytes)).toBe(true)
      // every one of them answered by the device with its own code
      const answers = rec.up.filter(
        (m) => m.cmd !== undefined && m.cmd >= WSSK.DeployStart && m.cmd <= WSSK.DeployFinish,
      )
      expect(answers.length).toBe(deployMsgs.length)
      const replayFrames = deployMsgs.map((m) => m.unit.bytes)

      // the firmware deployed back: a replay of the variant's deploy that took would change the hash
      disarms = linesFrom(0, DISARMED).length
      await onSession("the firmware back", async (s) => {
        expect(await s.link.deploy(bytecode)).toEqual({ sha256: sha, bytes: bytecode.length })
      })
      await booted("the firmware again", disarms)

      /**
       * Injects what `forge` makes (given the session as read so far) into the device's stream of a
       * fresh session; resolves once the runtime said what it did with it. A session a firmware MQTT
       * attempt took before the runtime read the injection is started again.
       */
      const inject = async (what: string, forge: (s: ReturnType<typeof readSession>) => Buffer) => {
        for (let tries = 1; ; tries++) {
          const s = await onSession(what, async (x) => x)
          expect(s.hash).toBe(sha) // the program before the injection
          const from = lines.length
          const rd = readSession(s.conn, key)
          // the endpoint's own messages of this session open under the derived key: the auth and the 0x93
          expect(rd.down.filter((m) => m.opcode === 0x2).every((m) => m.plain)).toBe(true)
          expect(rd.down.some((m) => m.cmd === WSSK.GetHash)).toBe(true)
          const bytes = forge(rd) // made and injected in one turn: no endpoint message slips in between
          s.conn.inject("down", bytes)
          const injectedAt = s.conn.units.length - 1
          const outcome = await waitFor(
            `what the runtime did with ${what}`,
            async () => {
              const after = lines.slice(from)
              const tag = after.findIndex((l) => /WSSK: error: /.test(l))
              const mqtt = after.findIndex((l) => MQTT_TRY.test(l))
              if (tag >= 0 && (mqtt < 0 || tag < mqtt)) {
                // the runtime read it; its close reaches the relay and the endpoint
                return s.conn.firstEnded && !s.link.open ? "read" : undefined
              }
              return mqtt >= 0 && !s.conn.open ? "taken" : undefined
            },
            LINK_MS,
            20,
          )
          if (outcome === "taken" && tries < TRIES) {
            taken++
            continue
          }
          expect(outcome).toBe("read")
          return { s, from, injectedAt, at: s.conn.units[injectedAt].at }
        }
      }

      /** What every injection must come to: refused by its tag, the link closed by the device, no deploy. */
      const assertRefused = async (what: string, r: Awaited<ReturnType<typeof inject>>) => {
        const after = lines.slice(r.from)
        // wssk.c decrypt(): jd_aes_ccm_decrypt fails → raise_error(es, "tag error"), logged "WSSK: error: tag error"
        expect(after.filter((l) => /WSSK: error: /.test(l))).toEqual([expect.stringMatching(/WSSK: error: tag error$/)])
        // wssk_health.c jd_wssk_on_event JD_CONN_EV_ERROR: `* connection error: "tag error"` (the
        // reason JSON-escaped), then DISCONNECTED
        expect(after.some((l) => /\* connection error: "tag error"/.test(l))).toBe(true)
        expect(after.some((l) => /WSSK-H: status 2 \(DISCONNECTED\)/.test(l))).toBe(true)
        // nothing of a deploy: devsmgr_deploy_start would log "mgr: deploy <n> b" and stop the program
        expect(after.filter((l) => /mgr: (deploy|program written)|\* stop program/.test(l))).toEqual([])
        // the device closed its link (jd_websock_close → jd_tcpsock_close): its side ended first
        expect(r.s.conn.firstEnded).toBe("client")
        expect(r.s.link.open).toBe(false)
        expect(r.s.link.closeReason).toBe("the device closed the connection")
        // and sent nothing for it: every device message after the injection (sealed before the
        // runtime read it) opens, and none answers a command but the device's own ping
        const rd = readSession(r.s.conn, key)
        const late = rd.up.filter((m) => m.unit.seq > r.injectedAt && m.opcode === 0x2)
        expect(late.every((m) => m.plain && m.cmd === WSSK.PingCloud)).toBe(true)
        // the program is the one before: 0x93 over a fresh link (also the next injection's check)
        const again = await onSession(`the hash after ${what}`, async (x) => x)
        expect(again.hash).toBe(sha)
        expect(linesFrom(r.from, /mgr: deploy/)).toEqual([])
        // the rest of the runtime's read after its close (a replay of many frames): websock_conn.c
        // on_data stops splitting a read only at ST_ERROR, so the bytes past its 270-byte buffer end
        // in "WS: error: chunk overflow", once more closing what is closed
        const ws = after.filter((l) => /WS: error: /.test(l))
        expect(ws.filter((l) => !/WS: error: chunk overflow$/.test(l))).toEqual([])
        return { lateDeviceMessages: late.length, overflow: ws.length > 0 }
      }

      const report: string[] = []
      // 2. the recorded deploy, replayed raw into a new session
      const replay = await inject("the replayed deploy", () => Buffer.concat(replayFrames))
      report.push(
        `replay (${replayFrames.length} frames): ${JSON.stringify(await assertRefused("the replay", replay))}`,
      )

      // 3a. a valid frame, random ciphertext (the size of a 0x94: command, u32, tag)
      const random = await inject("random ciphertext", () => wsFrame(0x2, randomBytes(1 + 4 + TAG_BYTES)))
      report.push(`random: ${JSON.stringify(await assertRefused("random ciphertext", random))}`)

      // 3b. the recorded 0x94's ciphertext with one bit flipped
      const flippedRecorded = Buffer.from(deployMsgs[0].payload)
      flippedRecorded[0] ^= 0x01
      const flipped = await inject("a recorded 0x94, bit-flipped", () => wsFrame(0x2, flippedRecorded))
      report.push(`recorded, flipped: ${JSON.stringify(await assertRefused("a bit-flipped 0x94", flipped))}`)

      // 3c. a 0x94 sealed under this session's key and the nonce the device expects next, one bit
      // flipped: unflipped it would open (checked here with the same key and nonce)
      let sealed: { plain: Buffer; nonce: Buffer; msg: Buffer; key: Buffer } | undefined
      const inSession = await inject("an in-session 0x94, bit-flipped", (rd) => {
        const plain = Buffer.alloc(5)
        plain[0] = WSSK.DeployStart
        plain.writeUInt32LE(variant.size, 1)
        const nonce = Buffer.from(rd.nextDownNonce)
        expect(nonce.length).toBe(NONCE_BYTES)
        const msg = sealMessage(rd.key!, nonce, plain)
        sealed = { plain, nonce, msg: Buffer.from(msg), key: rd.key! }
        msg[2] ^= 0x10
        return wsFrame(0x2, msg)
      })
      expect(openMessage(sealed!.key, sealed!.nonce, sealed!.msg)?.equals(sealed!.plain)).toBe(true)
      report.push(`in-session, flipped: ${JSON.stringify(await assertRefused("an in-session 0x94", inSession))}`)

      await meter.setCloudConnectionString("")
      console.log(
        `WSSK replay/forgery: every injection refused by its tag, the link closed by the device; ${report.join("; ")}; ` +
          `sessions taken by the firmware's MQTT attempts and started again: ${taken}`,
      )
    } catch (e) {
      console.log(`the meter's last lines:\n${lines.slice(-150).join("\n")}`)
      throw e
    } finally {
      await meter.stop()
    }
  }, 600_000)
})
