// `citymeter release` as a user runs it (a separate process) against a running bridge: keygen
// writes the key pair, the board's build is signed and registered and then listed; a release signed
// with another key is refused with its code and stores nothing; what the CLI can see is wrong (a
// board that is not ours, a missing key) is a usage error before anything is sent.
import { existsSync, mkdtempSync, readFileSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { manifestOf } from "../../bridge/src/releases.js"
import { startService, type Service } from "../../bridge/src/service.js"
import { paths } from "../../sim/src/paths.js"
import { firmwareVersion } from "../../cli/release.js"
import { captureLog, uid } from "../helpers.js"
import { CITYMETER_BIN, startNode } from "../../testkit/process.js"

const OPS = "rel-ops-token"
const citymeter = (...args: string[]) => startNode([CITYMETER_BIN, ...args], { CITYMETER_API_TOKEN: OPS }).done
const build = join(paths.root, ".devicescript/boards/citymeter_picow/bytecode.devs")

describe("citymeter release against a bridge", () => {
  let svc: Service
  const keys = mkdtempSync(join(tmpdir(), "cm-release-keys-"))
  const other = mkdtempSync(join(tmpdir(), "cm-release-other-"))

  beforeAll(async () => {
    const k = await citymeter("release", "keygen", "--out", keys)
    expect(k.code, k.stderr).toBe(0)
    expect(await citymeter("release", "keygen", "--out", other).then((r) => r.code)).toBe(0)
    svc = await startService({
      demo: true,
      databaseUrl: "pglite:memory",
      embeddedMqttPort: 0,
      httpPort: 0,
      apiTokens: { ops: OPS },
      releasePublicKey: readFileSync(join(keys, "release-public.pem"), "utf8"),
      clientId: uid("rel-bridge"),
      log: captureLog().log,
    })
  }, 180_000)
  afterAll(async () => {
    await svc?.stop()
  })

  test("keygen: the private key is 0600, the public key beside it, neither overwritten", async () => {
    expect(statSync(join(keys, "release-private.pem")).mode & 0o777).toBe(0o600)
    expect(readFileSync(join(keys, "release-public.pem"), "utf8")).toMatch(/^-----BEGIN PUBLIC KEY-----/)
    const again = await citymeter("release", "keygen", "--out", keys)
    expect(again.code).toBe(2)
    expect(again.stderr).toMatch(/never overwritten/)
  })

  test("the board's build is signed, registered and listed; another key's signature is refused", async () => {
    expect(existsSync(build), `${build}: run npm run build:boards`).toBe(true)
    const args = ["release", "--board", "citymeter_picow", "--bridge", svc.httpUrl!]
    const forged = await citymeter(...args, "--key", join(other, "release-private.pem"))
    expect(forged.code).toBe(1)
    expect(forged.stderr).toMatch(/refused the release: 422 CM_ERR_RELEASE_SIGNATURE/)
    expect(await svc.store.listReleases()).toEqual([])

    const r = await citymeter(...args, "--key", join(keys, "release-private.pem"))
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/registered: release \d+/)
    const m = manifestOf("citymeter_picow", firmwareVersion(), readFileSync(build))
    const list = await fetch(`${svc.httpUrl}/releases`, { headers: { authorization: `Bearer ${OPS}` } })
    expect((await list.json()).releases).toEqual([
      expect.objectContaining({ ...m, firmware: `citymeter-fw ${m.version}` }),
    ])
  })

  test("what the CLI can tell is wrong is a usage error, sent nowhere", async () => {
    const key = join(keys, "release-private.pem")
    const nope = await citymeter("release", "--board", "esp32c3_bare", "--key", key, "--bridge", svc.httpUrl!)
    expect(nope.code).toBe(2)
    expect(nope.stderr).toMatch(/not one of boards\/\*\.board\.json/)
    const noKey = await citymeter("release", "--board", "citymeter_picow", "--bridge", svc.httpUrl!)
    expect(noKey.code).toBe(2)
    expect(noKey.stderr).toMatch(/release needs --key/)
    expect(await svc.store.listReleases()).toHaveLength(1)
  })
})
