// The field CLI as a user runs it: a separate process (cli/bin/citymeter.js), real files, the real
// Mosquitto on 1883 for `watch`, a real bridge for `provision --bridge`: provision, decode
// and watch; provision registers meters, and checks their ids with the one grammar.
import { existsSync, mkdtempSync, readFileSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import mqtt from "mqtt"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { startService, type Service } from "../../bridge/src/service.js"
import { METER_ID_RULE, upTopic } from "../../bridge/src/topics.js"
import { parseEnvSettings } from "../../sim/src/settings-files.js"
import { MOSQUITTO_URL, captureLog, uid, waitFor } from "../helpers.js"
import { CITYMETER_BIN, startNode } from "../../testkit/process.js"
import { freePort } from "../../testkit/infra.js"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..")
const golden = (name: string) => join(root, "proto/golden", name)

const start = (args: string[], env: Record<string, string> = {}) =>
  startNode([CITYMETER_BIN, ...args], { CITYMETER_API_TOKEN: "", ...env })

const citymeter = (...args: string[]) => start(args).done
const tmpMeterDir = () => join(mkdtempSync(join(tmpdir(), "cm-cli-")), "meter")

describe("citymeter provision", () => {
  test("writes DeviceScript settings: non-secrets in .env.defaults, the password only in .env.local", async () => {
    const dir = join(mkdtempSync(join(tmpdir(), "cm-cli-")), "meter")
    const r = await citymeter(
      "provision",
      ...["-m", "hall-7.w1", "-b", "esp32c3_bare", "-u", "mqtts://broker.city.example:8883"],
      ...["--username", "hall7", "--password", "1234", "--interval", "60", "--batch", "2", "--set", "LEAK_S=3600"],
      ...["-o", dir],
    )
    // the shipped ACL lets a meter publish only as username = meter id
    expect(r.stderr).toMatch(/^citymeter: warning: --username 'hall7' differs from the meter id 'hall-7\.w1'/)
    expect(r.code).toBe(0)
    const defaults = readFileSync(join(dir, ".env.defaults"), "utf8")
    const local = readFileSync(join(dir, ".env.local"), "utf8")
    expect(parseEnvSettings(defaults)).toEqual({
      METER_ID: "hall-7.w1",
      BOARD: "esp32c3_bare",
      MQTT_HOST: "broker.city.example",
      MQTT_PORT: 8883,
      MQTT_PROTO: "tls",
      MQTT_USER: "hall7",
      INTERVAL_S: 60,
      BATCH: 2,
      LEAK_S: 3600,
    })
    // a numeric-looking password stays a string (DeviceScript parses values as JSON)
    const secrets = parseEnvSettings(local)
    expect(secrets).toEqual({ MQTT_PASS: "1234", SEAL_KEY: expect.stringMatching(/^[0-9a-f]{64}$/) })
    expect(defaults).not.toContain("1234")
    expect(defaults + r.stdout).not.toContain(secrets.SEAL_KEY as string) // the key only in .env.local
    expect(r.stdout).toContain("citymeter register -m hall-7.w1") // the bridge needs the key
    expect(statSync(join(dir, ".env.local")).mode & 0o777).toBe(0o600)
    // DeviceScript keeps spaces around '=' in the key: every setting line is KEY=value exactly
    for (const line of (defaults + local).split("\n").filter((l) => l && !l.startsWith("#"))) {
      expect(line).toMatch(/^[A-Z][A-Z0-9_]{0,12}=\S/)
    }
    expect(r.stdout).not.toContain("1234")
  })

  const rule = new RegExp(`is not valid: ${METER_ID_RULE.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`)
  const bad: [string, string[], RegExp][] = [
    ["a meter id that is not a topic level", ["-m", "bad/id"], /meter id 'bad\/id' is not valid/],
    ["a meter id longer than 64 characters", ["-m", "m".repeat(65)], rule],
    ["the meter id '.'", ["-m", "."], rule],
    ["the meter id '..'", ["-m", ".."], rule],
    ["a reserved device name as meter id", ["-m", "CON"], rule],
    ["a meter id starting with '-'", ["-m", "-x"], rule],
    ["a --bridge without a token", ["--bridge", "http://127.0.0.1:8080"], /--bridge needs the bridge's API token/],
    ["a --bridge that is not http(s)", ["--bridge", "mqtt://127.0.0.1:1883", "--token", "t"], /http:\/\/ or https:/],
    ["an http:// broker", ["-u", "http://broker:1883"], /scheme must be mqtt:\/\/ or mqtts:\/\//],
    ["credentials in the broker URL", ["-u", "mqtt://u:p@broker:1883"], /not in the broker URL/],
    ["an unknown board", ["-b", "no_such_board"], /unknown board 'no_such_board'/],
    [
      "batch 9",
      ["--batch", "9"],
      /batch must be an integer in 1\.\.4 \(got 9\): BATCH=9: a frame of 9 intervals can take \d+ B sealed, over the 177 B a flash slot holds for a frame/,
    ],
    ["interval 0", ["--interval", "0"], /interval must be an integer in 1\.\.86400/],
    ["a settings key longer than 13 characters", ["--set", "PRESSURE_LOW_PA=1"], /at most 13/],
    ["a password with '#'", ["--username", "u", "--password", "a#b"], /must not contain '#'/],
    ["a password without a username", ["--password", "x"], /needs a --username/],
  ]
  for (const [what, args, message] of bad) {
    test.concurrent(`rejects ${what} with exit code 2 and writes nothing`, async () => {
      const dir = tmpMeterDir()
      const base: Record<string, string> = { "-m": "ok-1", "-b": "sim", "-u": "mqtt://127.0.0.1:1883" }
      for (let i = 0; i < args.length; i += 2) base[args[i]] = args[i + 1]
      const r = await citymeter("provision", ...Object.entries(base).flat(), "-o", dir)
      expect(r.code).toBe(2)
      expect(r.stderr).toMatch(message)
      expect(r.stderr).toMatch(/^citymeter: error: /)
      expect(existsSync(dir)).toBe(false)
    })
  }
})

describe("citymeter provision --bridge", () => {
  const TOKEN = "cli-token"
  let svc: Service
  beforeAll(async () => {
    svc = await startService({
      demo: true,
      databaseUrl: "pglite:memory",
      embeddedMqttPort: 0,
      httpPort: 0,
      apiToken: TOKEN,
      clientId: uid("cli-bridge"),
      log: captureLog().log,
    })
  })
  afterAll(async () => {
    await svc?.stop()
  })
  const provisionArgs = (meterId: string, dir: string) => [
    "provision",
    ...["-m", meterId, "-b", "sim", "-u", "mqtt://127.0.0.1:1883", "--username", meterId, "-o", dir],
  ]

  test("registers the meter with the bridge after writing its settings; a second time it is known", async () => {
    const meterId = uid("cli-reg")
    const dir = tmpMeterDir()
    const r = await start([...provisionArgs(meterId, dir), "--bridge", svc.httpUrl!], {
      CITYMETER_API_TOKEN: TOKEN,
    }).done
    expect(r.stderr).toBe("") // username = meter id: no ACL warning
    expect(r.code).toBe(0)
    expect(r.stdout).toContain(`registered meter ${meterId} (sealed) with the bridge at ${svc.httpUrl}/`)
    expect(existsSync(join(dir, ".env.defaults"))).toBe(true)
    // the bridge holds the same key the meter's secrets hold
    const key = () => parseEnvSettings(readFileSync(join(dir, ".env.local"), "utf8")).SEAL_KEY as string
    const stored = await svc.store.getMeter(meterId)
    expect(stored).toMatchObject({ meterId, online: false, seal: { policy: "sealed" } })
    expect(Buffer.from(stored!.seal.key!).toString("hex")).toBe(key())
    expect(r.stdout).not.toContain(key())
    const again = await citymeter(...provisionArgs(meterId, dir), "--force", "--bridge", svc.httpUrl!, "--token", TOKEN)
    expect(again.code).toBe(0)
    expect(again.stdout).toContain(`already registered, key replaced: meter ${meterId}`)
    expect(Buffer.from((await svc.store.getMeter(meterId))!.seal.key!).toString("hex")).toBe(key())
    // `register` imports a provisioned meter's key later
    const later = uid("cli-reg")
    const laterDir = tmpMeterDir()
    expect((await citymeter(...provisionArgs(later, laterDir))).code).toBe(0)
    const reg = await start(["register", "-m", later, "--settings", laterDir, "--bridge", svc.httpUrl!], {
      CITYMETER_API_TOKEN: TOKEN,
    }).done
    expect(reg.code).toBe(0)
    const laterKey = parseEnvSettings(readFileSync(join(laterDir, ".env.local"), "utf8")).SEAL_KEY as string
    expect(Buffer.from((await svc.store.getMeter(later))!.seal.key!).toString("hex")).toBe(laterKey)
  })

  test("--wssk-url: a link key registered with the bridge, the connection string in a 0600 file, never on stdout; register imports it later", async () => {
    const meterId = uid("cli-wssk")
    const dir = tmpMeterDir()
    const wssk = ["--wssk-url", "ws://10.0.0.2:8081"]
    const r = await start([...provisionArgs(meterId, dir), ...wssk, "--bridge", svc.httpUrl!], {
      CITYMETER_API_TOKEN: TOKEN,
    }).done
    expect(r.code).toBe(0)
    const conn = readFileSync(join(dir, "wssk-connstr"), "utf8").trim()
    const m = /^ws:\/\/wssk:([0-9a-f]{64})@10\.0\.0\.2:8081\/wssk\/(.+)$/.exec(conn)
    expect(m?.[2]).toBe(meterId)
    expect(statSync(join(dir, "wssk-connstr")).mode & 0o777).toBe(0o600)
    expect(Buffer.from((await svc.store.linkKey(meterId))!).toString("hex")).toBe(m![1])
    expect(r.stdout).toContain(`ws://wssk:****@10.0.0.2:8081/wssk/${meterId}`)
    expect(r.stdout).toContain(`registered meter ${meterId}'s WSSK link key with the bridge`)
    expect(r.stdout).not.toContain(m![1])
    // without --bridge the key waits in the folder; `register` imports it with the sealing key
    const later = uid("cli-wssk")
    const laterDir = tmpMeterDir()
    const p = await citymeter(...provisionArgs(later, laterDir), ...wssk)
    expect(p.stdout).toContain(`the bridge needs the keys: citymeter register -m ${later}`)
    expect(await svc.store.linkKey(later)).toBeUndefined()
    const reg = await start(["register", "-m", later, "--settings", laterDir, "--bridge", svc.httpUrl!], {
      CITYMETER_API_TOKEN: TOKEN,
    }).done
    expect(reg.code).toBe(0)
    const laterConn = readFileSync(join(laterDir, "wssk-connstr"), "utf8")
    expect(laterConn).toContain(`wssk:${Buffer.from((await svc.store.linkKey(later))!).toString("hex")}@`)
    // a URL the runtime cannot use is refused before anything is written
    const bad = await citymeter(...provisionArgs(uid("cli-wssk"), tmpMeterDir()), "--wssk-url", "http://x:1")
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/^citymeter: error: --wssk-url must be ws:\/\/host:port/)
  })

  test("a refused or unreachable bridge is one clear error line and exit code 1", async () => {
    const meterId = uid("cli-reg")
    const refused = await citymeter(...provisionArgs(meterId, tmpMeterDir()), "--bridge", svc.httpUrl!, "--token", "no")
    expect(refused.code).toBe(1)
    expect(refused.stderr.trimEnd().split("\n")).toEqual([
      `citymeter: error: the bridge at ${svc.httpUrl}/ refused to register meter ${meterId}: 401 CM_ERR_UNAUTHORIZED: missing or wrong bearer token (this route needs the ops scope)`,
    ])
    expect(await svc.store.getMeter(meterId)).toBeUndefined()
    const closed = await freePort() // nothing listens there
    const away = await citymeter(
      ...provisionArgs(meterId, tmpMeterDir()),
      ...["--bridge", `http://127.0.0.1:${closed}`, "--token", "t"],
    )
    expect(away.code).toBe(1)
    expect(away.stderr.trimEnd().split("\n")).toHaveLength(1)
    expect(away.stderr).toMatch(
      new RegExp(
        `^citymeter: error: cannot reach the bridge at http://127\\.0\\.0\\.1:${closed}/ to register meter .*ECONNREFUSED`,
      ),
    )
  })
})

describe("citymeter decode", () => {
  test("explains the golden readings frame field by field, with units and the bridge's view", async () => {
    const r = await citymeter("decode", golden("readings-4x3.hex"))
    expect(r.code).toBe(0)
    const out = r.stdout
    expect(out).toContain("citymeter.v1.Uplink, 105 bytes")
    expect(out).toMatch(/^0\s+08 03\s+1 boot\s+varint\s+3$/m)
    expect(out).toMatch(/^4\s+52 63\s+10 readings\s+len 99\s+ReadingBatch \{$/m)
    expect(out).toMatch(/1 start_s\s+varint\s+1795392000 s \(Unix time 2026-11-23T00:00:00\.000Z\)/)
    expect(out).toMatch(/3 interval_s\s+varint\s+900 s \(15 min\)/)
    expect(out).toMatch(/2 volume_ml\s+len 8, packed\s+4 values: 15200 mL \(15\.2 L\), 0 mL, 3100 mL/)
    expect(out).toMatch(/4 voltage_dv\s+len 8, packed\s+4 values: 2301 dV \(230\.1 V\)/)
    expect(out).toMatch(/1 avg_pa\s+len 12, packed\s+4 values: 312000 Pa \(312 kPa\)/)
    expect(out).toContain("bridge's view (valid on citymeter/v1/<meter>/up/readings)")
    expect(out).toContain("readings boot=3 seq=42: 4 × 900 s from 2026-11-23T00:00:00Z")
  })

  test("takes the frame as a hex argument too, and explains signed values and enums", async () => {
    const hex = readFileSync(golden("alarm-leak-raised.hex"), "utf8").trim()
    const r = await citymeter("decode", hex)
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/1 type\s+varint\s+ALARM_TYPE_LEAK \(1\)/)
    expect(r.stdout).toMatch(/5 value\s+varint\s+-1 \(zigzag 1\)/)
  })

  test("decodes downlinks with --downlink", async () => {
    const r = await citymeter("decode", "--downlink", golden("down-ack.hex"))
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/1 ack\s+len \d+\s+Ack \{/)
    expect(r.stdout).toMatch(/meter's view: ack boot=\d+ seq=\d+/)
  })

  test("fails with exit code 1 on a truncated frame and 2 on input that is not hex", async () => {
    const truncated = readFileSync(golden("readings-4x3.hex"), "utf8").trim().slice(0, 40)
    const r = await citymeter("decode", truncated)
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/not a valid protobuf Uplink: length \d+ at offset \d+ runs past the end/)
    const r2 = await citymeter("decode", "not-hex-and-not-a-file")
    expect(r2.code).toBe(2)
    expect(r2.stderr).toMatch(/neither an existing file nor hex bytes/)
  })
})

describe("citymeter watch", () => {
  test("prints a frame published to the meter's topic during the watch, decoded; a bad one as rejected", async () => {
    const meterId = uid("cli-watch")
    const w = start(["watch", meterId, "-u", MOSQUITTO_URL, "--count", "2", "--timeout", "20"])
    await waitFor("watch to subscribe", async () => w.out.stdout.includes("watching"), 15000, 50)
    const pub = await mqtt.connectAsync(MOSQUITTO_URL, { clientId: uid("cli-pub") })
    const frame = Buffer.from(readFileSync(golden("readings-4x3.hex"), "utf8").trim(), "hex")
    await pub.publishAsync(upTopic(meterId, "readings"), frame, { qos: 1 })
    await pub.publishAsync(upTopic(meterId, "readings"), Buffer.from([0x0a, 0x05]), { qos: 1 })
    await pub.endAsync()
    const r = await w.done
    expect(r.stderr).toBe("")
    expect(r.code).toBe(0)
    expect(r.stdout).toContain(`watching citymeter/v1/${meterId}/# on ${MOSQUITTO_URL}`)
    expect(r.stdout).toMatch(
      new RegExp(`${meterId} up/readings \\(105 B\\) readings boot=3 seq=42: 4 × 900 s from 2026-11-23T00:00:00Z`),
    )
    expect(r.stdout).toMatch(/#4 2026-11-23T00:45:00Z, water 48\.750 L, energy 251 Wh, power 1004 W, voltage 229\.0 V/)
    expect(r.stdout).toMatch(new RegExp(`${meterId} up/readings \\(2 B\\) REJECTED CM_ERR_DECODE`))
  })

  test("exits with code 1 and a clear error when the broker cannot be reached", async () => {
    const r = await citymeter("watch", "m-1", "-u", "mqtt://127.0.0.1:1", "--timeout", "5")
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/cannot connect to mqtt:\/\/127\.0\.0\.1:1/)
  })
})

describe("citymeter --help", () => {
  test("every command has help, and an unknown command is a usage error", async () => {
    const cmds = [
      "provision",
      "register",
      "build",
      "release",
      "rollout",
      "flash",
      "watch",
      "decode",
      "sim",
      "bridge",
      "backup",
      "restore",
    ]
    const runs = await Promise.all(cmds.map((cmd) => citymeter(cmd, "--help")))
    cmds.forEach((cmd, i) => {
      expect(runs[i].code, cmd).toBe(0)
      expect(runs[i].stdout, cmd).toMatch(new RegExp(`^Usage: citymeter ${cmd} `))
    })
    const r = await citymeter("frobnicate")
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/unknown command 'frobnicate'/)
  })

  test("flash without a runtime image says how to pass one (no network here)", async () => {
    const r = await citymeter("flash", "--board", "sim")
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/run `citymeter sim`/)
    const r2 = await citymeter("flash", "--board", "pico", "--file", "/nonexistent/image.uf2")
    expect(r2.code).toBe(2)
    expect(r2.stderr).toMatch(/runtime image \/nonexistent\/image\.uf2 not found/)
  })
})
