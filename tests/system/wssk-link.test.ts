// Issue 23 item 2: the bridge's own WSSK endpoint (bridge/src/wssk/). The real firmware runs in the
// simulator's VM; its runtime links to the BRIDGE with the link key registered for the meter through
// the ops API (PUT /meters/:id/link-key). The bridge asks 0x93 (the SHA-256 of the deployed
// bytecode), redeploys it (0x94, 0x95 × n, 0x96, 0x93) and streams the device's log. A wrong key, an
// unknown meter and a meter without a key are refused, counted by reason and logged without keys.
import { createHash, randomBytes } from "node:crypto"
import { readFileSync } from "node:fs"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { startService, type Service } from "../../bridge/src/service.js"
import { connectionString } from "../../bridge/src/wssk/protocol.js"
import { SimMeter } from "../../sim/src/meter.js"
import { paths } from "../../sim/src/paths.js"
import { freePort } from "../../testkit/infra.js"
import { captureLog, uid, waitFor } from "../helpers.js"

const OPS = "ops-token-wssk"

describe("the bridge's WSSK endpoint", () => {
  let svc: Service
  const { log, lines } = captureLog()
  beforeAll(async () => {
    svc = await startService({
      demo: true,
      databaseUrl: "pglite:memory",
      embeddedMqttPort: 0,
      clientId: uid("wssk-bridge"),
      apiTokens: { ops: OPS },
      wssk: { port: 0, host: "127.0.0.1", handshakeMs: 2000 },
      log,
    })
  })
  afterAll(async () => {
    await svc?.stop()
  })

  const ops = { authorization: `Bearer ${OPS}` }
  const failures = async (reason: string) =>
    (await svc.metrics.wsskAuthFailures.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0
  const metric = async (m: { get(): Promise<{ values: { value: number }[] }> }) => (await m.get()).values[0]?.value ?? 0

  test("a meter's runtime links with its registered key; hash() is the bytecode's SHA-256, deploy() rewrites it, logs stream; wrong keys, unknown meters and meters without a key are refused and counted", async () => {
    const wssk = svc.wssk!
    const bytecode = readFileSync(paths.bytecode)
    const sha = createHash("sha256").update(bytecode).digest("hex")
    const meterId = uid("wsskb")
    const key = randomBytes(32)
    const keyHex = key.toString("hex")

    // the registry: ops scope only, a known meter only; the key never comes back
    expect((await svc.app.inject({ method: "PUT", url: `/meters/${meterId}`, headers: ops })).statusCode).toBe(201)
    const put = (id: string, body: unknown, headers: Record<string, string> = ops) =>
      svc.app.inject({ method: "PUT", url: `/meters/${id}/link-key`, headers, payload: body as object })
    expect((await put(meterId, { key: keyHex }, {})).statusCode).toBe(401)
    expect((await put(uid("nobody"), { key: keyHex })).statusCode).toBe(404)
    expect((await put(meterId, { key: "ab" })).statusCode).toBe(400)
    const set = await put(meterId, { key: keyHex })
    expect(set.statusCode).toBe(200)
    expect(set.json()).toEqual({ meterId, linkKey: true })
    const shown = (await svc.app.inject({ method: "GET", url: `/meters/${meterId}` })).body
    expect(shown).toContain(meterId)
    expect(shown.toLowerCase()).not.toContain(keyHex)

    const meter = new SimMeter({
      meterId,
      water: "register", // the bytecode `npm run build:firmware` wrote (paths.bytecode)
      // no broker: the firmware's MQTT reconnects (each takes the VM's one socket for a moment) are all it does
      settings: { MQTT_HOST: "127.0.0.1", MQTT_PORT: await freePort() },
    })
    /** Runs fn on the meter's link; a link a firmware reconnect took from under it is waited for again. */
    const onLink = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
      for (let lost = 0; ; lost++) {
        await waitFor(`the meter's link (${what})`, async () => wssk.isUp(meterId), 10000, 20)
        try {
          return await fn()
        } catch (e) {
          if (lost >= 3 || wssk.isUp(meterId)) throw e
        }
      }
    }
    try {
      await meter.start()
      await meter.waitForLine(/citymeter: meter .* boot \d+/)
      // the firmware disarms the runtime's link at boot, before its first MQTT connect
      // (firmware/update-window.ts): armed before that, the link would be cleared (seen in CI)
      await meter.waitForLine(/citymeter: runtime cloud link disarmed/)
      const armAt = performance.now()
      await meter.setCloudConnectionString(connectionString(wssk.url, meterId, key))
      const hash = await onLink("hash", () => wssk.hash(meterId))
      const linkMs = performance.now() - armAt
      expect(hash.toString("hex")).toBe(sha)
      const up = wssk.isUp(meterId) ? 1 : 0 // (a firmware reconnect may have taken the link meanwhile)
      expect(await metric(svc.metrics.wsskLinksUp)).toBe(up)

      // the runtime's deploy path: the same bytecode again, in 224-byte chunks, re-checked by 0x93
      const progress: number[] = []
      const deployedBefore = await metric(svc.metrics.wsskDeployedBytes)
      const t0 = performance.now()
      const done = await onLink("deploy", () => {
        progress.length = 0
        return wssk.deploy(meterId, bytecode, (n) => progress.push(n))
      })
      const deployMs = performance.now() - t0
      expect(done).toEqual({ sha256: sha, bytes: bytecode.length })
      expect(progress.length).toBe(Math.ceil(bytecode.length / 224))
      expect(progress.at(-1)).toBe(bytecode.length)
      expect((await metric(svc.metrics.wsskDeployedBytes)) - deployedBefore).toBeGreaterThanOrEqual(bytecode.length)
      await waitFor(
        "the redeployed firmware's boot",
        async () => meter.lines.some((l) => /mgr: program written/.test(l)),
        10000,
      )
      // an image the runtime cannot take is refused before anything is sent
      await expect(wssk.deploy(meterId, bytecode.subarray(1))).rejects.toThrow(/multiple of 32/)

      // the device's log over the link (its own line saying what it streams)
      const logLines: string[] = []
      await onLink("logs", async () => {
        const stop = await wssk.streamLogs(meterId, (l) => logLines.push(l))
        await waitFor("the device log over WSSK", async () => logLines.some((l) => /streaming: 0x2$/.test(l)), 5000, 20)
        stop()
      })

      // a wrong key: refused (its auth does not open, or the device cannot open ours), no link
      const upsBefore = lines.filter((l) => l.msg === "WSSK link up").length
      const bad = async () => (await failures("bad_auth")) + (await failures("closed"))
      const badBefore = await bad()
      const wrongKey = randomBytes(32)
      await meter.setCloudConnectionString(connectionString(wssk.url, meterId, wrongKey))
      await waitFor("a refused wrong key", async () => (await bad()) > badBefore, 10000, 20)
      expect(wssk.isUp(meterId)).toBe(false)
      // a leaked key opens its own meter's link only: this meter's key on another meter's path
      const other = uid("wsskb")
      expect((await svc.app.inject({ method: "PUT", url: `/meters/${other}`, headers: ops })).statusCode).toBe(201)
      expect((await put(other, { key: randomBytes(32).toString("hex") })).statusCode).toBe(200)
      // the device cannot open the endpoint's auth (sealed under the other meter's key): it closes, or
      // stays silent until the handshake time
      const refused = async () => (await bad()) + (await failures("timeout"))
      const borrowed = await refused()
      await meter.setCloudConnectionString(connectionString(wssk.url, other, key))
      await waitFor("another meter's path under this key refused", async () => (await refused()) > borrowed, 20000, 20)
      expect(wssk.isUp(other)).toBe(false)
      // an unknown meter (the path names one the registry does not have)
      const unknownBefore = await failures("unknown_meter")
      await meter.setCloudConnectionString(connectionString(wssk.url, uid("ghost"), key))
      await waitFor("a refused unknown meter", async () => (await failures("unknown_meter")) > unknownBefore, 10000, 20)
      // the meter's key cleared: its right string is refused too
      expect((await put(meterId, { key: null })).json()).toEqual({ meterId, linkKey: false })
      const noKeyBefore = await failures("no_key")
      await meter.setCloudConnectionString(connectionString(wssk.url, meterId, key))
      await waitFor("a refused meter without a key", async () => (await failures("no_key")) > noKeyBefore, 10000, 20)
      expect(lines.filter((l) => l.msg === "WSSK link up").length).toBe(upsBefore)
      expect(await metric(svc.metrics.wsskLinksUp)).toBe(0)

      // refusals are logged, with the meter and the reason, never a key
      const refusals = lines.filter((l) => l.msg === "WSSK link refused")
      const reasons = new Set(refusals.map((l) => l.reason))
      expect(
        [...reasons].filter(
          (r) => !["bad_auth", "closed", "timeout", "busy", "unknown_meter", "no_key"].includes(r as string),
        ),
      ).toEqual([])
      expect(reasons.has("unknown_meter") && reasons.has("no_key")).toBe(true)
      expect(refusals.every((l) => typeof l.meterId === "string")).toBe(true)
      const logged = JSON.stringify(lines).toLowerCase()
      for (const k of [keyHex, wrongKey.toString("hex")]) expect(logged).not.toContain(k)
      await meter.setCloudConnectionString("")
      console.log(
        `WSSK bridge endpoint: arm→0x93 answered ${Math.round(linkMs)} ms; deploy of ${bytecode.length} B ` +
          `${Math.round(deployMs)} ms; refusals logged by reason: ${[...reasons].join(", ")}`,
      )
    } finally {
      await meter.stop()
    }
  })
})
