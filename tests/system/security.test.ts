// Security of the MQTT side: TLS with a private CA (generated here with openssl), per-meter logins
// from one Mosquitto password file, and the topic ACL that keeps meter A from publishing as meter
// B — on a private Mosquitto (deploy/mosquitto/citymeter-secure.conf + acl) and on the embedded
// broker (bridge/src/broker.ts), which enforce the same rule.
import { randomBytes } from "node:crypto"
import { execFileSync, spawn, type ChildProcess } from "node:child_process"
import { appendFileSync, chmodSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import mqtt from "mqtt"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { hashPassword } from "../../bridge/src/acl.js"
import { citymeter } from "../../bridge/src/gen/citymeter.js"
import { startService, type Service } from "../../bridge/src/service.js"
import { downTopic, upTopic } from "../../bridge/src/topics.js"
import { captureLog, uid, waitFor } from "../helpers.js"
import { freePort } from "../../testkit/infra.js"
import { readingsFrame as readingsOf, sealUplink } from "../../testkit/frames.js"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..")
const { Uplink } = citymeter.v1
const dir = mkdtempSync(join(tmpdir(), "cm-tls-"))
const file = (name: string) => join(dir, name)
const PASSWORDS = { "citymeter-bridge": "bridge-pw", "meter-a": "pw-a", "meter-b": "pw-b", "meter-c": "pw-c" }
/** meter-c's line is written by hashPassword (what `npm start` writes), the others by mosquitto_passwd. */
const OURS = "meter-c"

/** A private CA, a server certificate for 127.0.0.1 signed by it, and the password file. */
function makeSecrets() {
  const ssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "ignore" })
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
  ssl("req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=citymeter test CA")
  ssl("req", ...ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
  writeFileSync(file("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
  ssl(
    "x509",
    "-req",
    "-in",
    "server.csr",
    "-CA",
    "ca.crt",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "server.crt",
    "-days",
    "2",
    "-extfile",
    "san.ext",
  )
  // Mosquitto started as root drops to its own user before it reads the key and the password file
  chmodSync(dir, 0o755)
  chmodSync(file("server.key"), 0o644)
  for (const [user, pw] of Object.entries(PASSWORDS)) {
    if (user === OURS) continue
    const args = user === "citymeter-bridge" ? ["-c", "-b"] : ["-b"]
    execFileSync("mosquitto_passwd", [...args, file("passwd"), user, pw], { stdio: "ignore" })
  }
  appendFileSync(file("passwd"), `${OURS}:${hashPassword(PASSWORDS[OURS])}\n`)
}

const readingsFrame = (seq: number) => readingsOf({ seq, startS: Math.floor(Date.now() / 1000) - 60, totalMl: seq })

const meterClient = (url: string, user: keyof typeof PASSWORDS, opts: mqtt.IClientOptions = {}) =>
  mqtt.connectAsync(url, {
    clientId: user, // a meter connects as its meter id (firmware/uplink.ts); the embedded broker insists
    username: user,
    password: PASSWORDS[user],
    ca: readFileSync(file("ca.crt")),
    reconnectPeriod: 0,
    connectTimeout: 5000,
    ...opts,
  })

beforeAll(() => makeSecrets())

/** The ACL and TLS behaviour both brokers must show; `refusal` is how each refuses a publish. */
function describeBroker(
  name: string,
  start: () => Promise<{ svc: Service; url: string }>,
  refusal: "dropped" | "disconnected",
) {
  describe(`MQTT security on ${name}`, () => {
    let svc: Service
    let url: string
    beforeAll(async () => {
      ;({ svc, url } = await start())
    }, 120_000) // starts its own broker and a bridge: slow on a loaded 2-core machine
    afterAll(async () => {
      await svc?.stop()
    })
    const readings = async (meterId: string) => {
      const res = await svc.app.inject({ url: `/meters/${meterId}/readings` })
      return res.statusCode === 200 ? (res.json().readings as { seq: number }[]) : []
    }

    test("over TLS with the private CA the bridge and a meter connect; without the CA or with a wrong password they do not", async () => {
      expect(url).toMatch(/^mqtts:\/\//)
      const a = await meterClient(url, "meter-a")
      await a.publishAsync(upTopic("meter-a", "readings"), readingsFrame(1), { qos: 1 })
      await waitFor("meter-a stored over TLS", async () => (await readings("meter-a")).length === 1, 10_000)
      await a.endAsync()
      // a password file line written by hashPassword (the demo's logins) works on both brokers
      await (await meterClient(url, OURS)).endAsync()
      await expect(meterClient(url, OURS, { password: "pw-a" })).rejects.toThrow()
      await expect(meterClient(url, "meter-a", { ca: undefined })).rejects.toThrow(/certificate/i)
      await expect(meterClient(url, "meter-a", { password: "wrong" })).rejects.toThrow()
      await expect(meterClient(url, "meter-a", { username: undefined, password: undefined })).rejects.toThrow()
    })

    test("a sealed meter's frames travel over TLS as well; its open frames are refused", async () => {
      const key = randomBytes(32)
      await svc.store.setSeal("meter-a", { policy: "sealed", key })
      const a = await meterClient(url, "meter-a")
      const sealed = sealUplink(key, Uplink.decode(readingsFrame(5)))
      await a.publishAsync(upTopic("meter-a", "readings"), Buffer.from(sealed), { qos: 1 })
      await a.publishAsync(upTopic("meter-a", "readings"), readingsFrame(6), { qos: 1 })
      await waitFor(
        "the sealed frame stored over TLS",
        async () => (await readings("meter-a")).some((r) => r.seq === 5),
        10_000,
      )
      await new Promise((r) => setTimeout(r, 300))
      const seqs = (await readings("meter-a")).map((r) => r.seq)
      expect(seqs).toContain(5)
      expect(seqs).not.toContain(6)
      await svc.store.setSeal("meter-a", { policy: "open", key: null })
      await a.endAsync()
    })

    test("meter A cannot read meter B's downlinks", async () => {
      const a = await meterClient(url, "meter-a")
      const b = await meterClient(url, "meter-b")
      const got = { a: [] as string[], b: [] as string[] }
      a.on("message", (t) => got.a.push(t))
      b.on("message", (t) => got.b.push(t))
      // the embedded broker refuses the subscription (0x80); Mosquitto grants it and filters on delivery
      const refused = await a.subscribeAsync(downTopic("meter-b", "config"), { qos: 1 }).then(
        () => false,
        () => true,
      )
      expect(refused).toBe(refusal === "disconnected")
      await b.subscribeAsync(downTopic("meter-b", "config"), { qos: 1 })
      await svc.bridge!.send("meter-b", "config", new Uint8Array([0x1a, 0x02, 0x08, 0x3c]))
      await waitFor("B's downlink", async () => got.b.length === 1, 10_000)
      await new Promise((r) => setTimeout(r, 200))
      expect(got.a).toEqual([])
      await a.endAsync()
      await b.endAsync()
    })

    test("a meter's login connects only under its own client id on the embedded broker (Mosquitto cannot bind them)", async () => {
      // issue 26: a client taking a meter's (or the bridge's) client id took over its session
      const takeover = meterClient(url, "meter-a", { clientId: "meter-b" })
      if (refusal === "disconnected")
        await expect(takeover).rejects.toMatchObject({ code: 2 }) // identifier rejected
      else await (await takeover).endAsync()
      const bridgeTakeover = meterClient(url, "meter-a", { clientId: uid("citymeter-bridge") })
      if (refusal === "disconnected") await expect(bridgeTakeover).rejects.toMatchObject({ code: 2 })
      else await (await bridgeTakeover).endAsync()
    })

    test("meter A cannot publish as meter B", async () => {
      const a = await meterClient(url, "meter-a")
      // Mosquitto logs "Denied PUBLISH", acknowledges and drops it; aedes closes the connection
      await Promise.race([
        a.publishAsync(upTopic("meter-b", "readings"), readingsFrame(5), { qos: 1 }).then(
          () => "acked",
          () => "refused",
        ),
        new Promise<string>((r) => a.once("close", () => r("closed"))),
      ])
      await a.endAsync(true)
      // a later frame of A's own arrives: the broker handled the forged one before it
      const a2 = await meterClient(url, "meter-a")
      await a2.publishAsync(upTopic("meter-a", "readings"), readingsFrame(2), { qos: 1 })
      await waitFor("A's own frame", async () => (await readings("meter-a")).some((r) => r.seq === 2), 10_000)
      expect((await svc.app.inject({ url: "/meters/meter-b" })).statusCode).toBe(404)
      expect(await readings("meter-b")).toEqual([])
      await a2.endAsync()
      // B itself may publish as B
      const b = await meterClient(url, "meter-b")
      await b.publishAsync(upTopic("meter-b", "readings"), readingsFrame(1), { qos: 1 })
      await waitFor("B's own frame", async () => (await readings("meter-b")).length === 1, 10_000)
      await b.endAsync()
    })
  })
}

const bridgeLogin = {
  mqttUsername: "citymeter-bridge",
  mqttPassword: PASSWORDS["citymeter-bridge"],
  mqttCaFile: file("ca.crt"),
}

let mosquitto: ChildProcess | undefined
afterAll(() => {
  mosquitto?.kill("SIGTERM")
})

describeBroker(
  "Mosquitto",
  async () => {
    const port = await freePort()
    const conf = readFileSync(join(root, "deploy/mosquitto/citymeter-secure.conf"), "utf8")
      .replace(/^listener .*$/m, `listener ${port} 127.0.0.1`)
      .replace(/^cafile .*$/m, `cafile ${file("ca.crt")}`)
      .replace(/^certfile .*$/m, `certfile ${file("server.crt")}`)
      .replace(/^keyfile .*$/m, `keyfile ${file("server.key")}`)
      .replace(/^password_file .*$/m, `password_file ${file("passwd")}`)
      // a copy beside the others: in a mode-0700 clone Mosquitto's own user cannot read the repo's
      .replace(/^acl_file .*$/m, `acl_file ${file("acl")}`)
      .replace(/^persistence true$/m, "persistence false")
    writeFileSync(file("acl"), readFileSync(join(root, "deploy/mosquitto/acl")))
    chmodSync(file("acl"), 0o644)
    writeFileSync(file("mosquitto.conf"), conf + "\nlog_dest none\n")
    mosquitto = spawn("mosquitto", ["-c", file("mosquitto.conf")], { stdio: "ignore" })
    const url = `mqtts://127.0.0.1:${port}`
    // the bridge retries until Mosquitto listens
    const svc = await startService({
      demo: true,
      mqttUrl: url,
      databaseUrl: "pglite:memory",
      clientId: uid("tls-bridge"),
      log: captureLog().log,
      ...bridgeLogin,
    })
    return { svc, url }
  },
  "dropped",
)

describeBroker(
  "the embedded broker",
  async () => {
    const svc = await startService({
      demo: true,
      databaseUrl: "pglite:memory",
      embeddedMqttPort: 0,
      embeddedBroker: {
        passwordFile: file("passwd"),
        bridgeUser: "citymeter-bridge",
        tls: { certFile: file("server.crt"), keyFile: file("server.key") },
      },
      clientId: uid("tls-bridge"),
      log: captureLog().log,
      ...bridgeLogin,
    })
    return { svc, url: svc.mqttUrl }
  },
  "disconnected",
)
