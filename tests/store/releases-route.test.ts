// Releases over HTTP (issue 23 item 3): `citymeter release` (cli/release.ts, its fetch answered by
// the app in process) signs a build and registers it; it is listed, read and downloaded with the
// scopes each needs. Forged, altered, unsigned, wrong-board, misaligned, oversize and conflicting
// releases are refused with their codes, and nothing is stored for any of them.
import { generateKeyPairSync, randomBytes } from "node:crypto"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import pino from "pino"
import { afterAll, beforeAll, describe, expect, test, vi } from "vitest"
import { buildApp } from "../../bridge/src/api.js"
import { BRIDGE_DEFAULTS } from "../../bridge/src/defaults.js"
import { createMetrics } from "../../bridge/src/metrics.js"
import { manifestOf, signManifest, type ReleaseManifest } from "../../bridge/src/releases.js"
import { openPglite } from "../../bridge/src/store/engines.js"
import type { Store } from "../../bridge/src/store/store.js"
import { keygen, release } from "../../cli/release.js"
import { bridgeTarget } from "../../cli/provision.js"

const OPS = { authorization: "Bearer rel-ops" }
const READ = { authorization: "Bearer rel-read" }

describe("releases over HTTP", () => {
  let store: Store
  let app: ReturnType<typeof buildApp>
  let keyFile: string
  let privatePem: string
  const dir = mkdtempSync(join(tmpdir(), "cm-releases-"))

  beforeAll(async () => {
    const k = keygen(dir, () => {})
    keyFile = k.privateFile
    privatePem = readFileSync(k.privateFile, "utf8")
    store = await openPglite(undefined)
    app = buildApp({
      store,
      metrics: createMetrics(),
      apiTokens: { ops: "rel-ops", read: "rel-read" },
      releasePublicKey: readFileSync(k.publicFile, "utf8"),
    })
    await app.ready()
  }, 180_000) // PGlite's start took over 60 s with other suites beside it on 2 cores
  afterAll(async () => {
    vi.unstubAllGlobals()
    await app?.close()
    await store?.close()
  })

  const post = (payload: object, headers = OPS) => app.inject({ method: "POST", url: "/releases", payload, headers })
  /** A release body, signed with `key` (default: the release key), or unsigned with null. */
  const body = (m: ReleaseManifest, bytecode: Uint8Array, key: string | null = privatePem) => ({
    manifest: m,
    ...(key ? { signature: signManifest(m, key).toString("base64") } : {}),
    bytecode: Buffer.from(bytecode).toString("base64"),
  })
  const stored = async () => (await store.listReleases()).length

  test("citymeter release signs a build and registers it; it is listed, read, and downloaded with ops", async () => {
    // the CLI's requests go to the app in process
    vi.stubGlobal("fetch", async (url: URL, init: RequestInit) => {
      const res = await app.inject({
        method: init.method as "POST",
        url: new URL(url).pathname,
        headers: init.headers as Record<string, string>,
        payload: init.body as string,
      })
      return new Response(res.body, { status: res.statusCode })
    })
    const build = mkdtempSync(join(tmpdir(), "cm-build-"))
    const bytecode = randomBytes(61696)
    writeFileSync(join(build, "bytecode.devs"), bytecode)
    writeFileSync(join(build, "build.json"), JSON.stringify({ board: "citymeter_picow", version: "0.2.0" }))
    const target = bridgeTarget("http://bridge.test:8080", "rel-ops")
    const lines: string[] = []
    const input = { board: "citymeter_picow", keyFile, bytecode: join(build, "bytecode.devs") }
    const r = await release(input, target, (l) => lines.push(l))
    expect(lines.join("\n")).toMatch(/registered: release \d+/)
    const m = manifestOf("citymeter_picow", "0.2.0", bytecode)
    expect(r).toMatchObject({ board: m.board, version: m.version, sha256: m.sha256 })
    // the same build again: registered already, no second row
    await release(input, target, (l) => lines.push(l))
    expect(lines.at(-1)).toMatch(/already registered: release/)
    expect(await stored()).toBe(1)

    const list = await app.inject({ url: "/releases", headers: READ })
    expect(list.statusCode, list.body).toBe(200)
    expect(list.json().releases).toEqual([
      expect.objectContaining({ id: r.id, board: m.board, version: "0.2.0", firmware: "citymeter-fw 0.2.0" }),
    ])
    const one = await app.inject({ url: `/releases/${r.id}`, headers: READ })
    expect(one.json()).toMatchObject({ sha256: m.sha256, size: 61696 })
    expect((await app.inject({ url: "/releases" })).statusCode).toBe(401)
    // the bytes: ops only, exactly as signed
    expect((await app.inject({ url: `/releases/${r.id}/bytecode`, headers: READ })).statusCode).toBe(401)
    const bin = await app.inject({ url: `/releases/${r.id}/bytecode`, headers: OPS })
    expect(bin.statusCode).toBe(200)
    expect(bin.headers["content-type"]).toBe("application/octet-stream")
    expect(bin.rawPayload.equals(bytecode)).toBe(true)
    expect((await app.inject({ url: "/releases/999999", headers: READ })).json().error).toBe("CM_ERR_NOT_FOUND")
    // the CLI reports a refusal with the bridge's code
    const other = join(build, "bytecode.devs")
    writeFileSync(other, randomBytes(61696))
    await expect(release(input, target, () => {})).rejects.toThrow(/409 CM_ERR_RELEASE_CONFLICT/)
    vi.unstubAllGlobals()
  })

  test("forged, altered, unsigned, wrong-board, misaligned and oversize releases are refused; nothing is stored", async () => {
    const before = await stored()
    const bytes = randomBytes(1024)
    const m = manifestOf("citymeter_esp32c3", "0.3.0", bytes)
    const forger = generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }) as string
    const altered = Buffer.from(bytes)
    altered[512] ^= 1
    const nope = manifestOf("citymeter_nope", "0.3.0", bytes)
    const odd = randomBytes(1000)
    const justOver = randomBytes(BRIDGE_DEFAULTS.releaseMaxBytes + 32)
    const cases: [string, object, number, string][] = [
      ["forged", body(m, bytes, forger), 422, "CM_ERR_RELEASE_SIGNATURE"],
      ["altered", { ...body(m, bytes), bytecode: altered.toString("base64") }, 422, "CM_ERR_RELEASE_MISMATCH"],
      ["unsigned", body(m, bytes, null), 400, "CM_ERR_RELEASE_UNSIGNED"],
      ["wrong board", body(nope, bytes), 422, "CM_ERR_RELEASE_BOARD"],
      ["misaligned", body(manifestOf("citymeter_esp32c3", "0.3.0", odd), odd), 422, "CM_ERR_RELEASE_SIZE"],
      ["over RELEASE_MAX_BYTES", body(manifestOf(m.board, "0.3.0", justOver), justOver), 413, "CM_ERR_BODY_TOO_LARGE"],
      [
        "over the body limit",
        { ...body(m, bytes), bytecode: randomBytes(300_000).toString("base64") },
        413,
        "CM_ERR_BODY_TOO_LARGE",
      ],
    ]
    for (const [what, payload, status, code] of cases) {
      const res = await post(payload)
      expect([what, res.statusCode, res.json().error]).toEqual([what, status, code])
    }
    // no token, a read token: 401 before the body is looked at
    expect((await post(body(m, bytes), { authorization: "" })).statusCode).toBe(401)
    expect((await post(body(m, bytes), READ)).statusCode).toBe(401)
    expect(await stored()).toBe(before)
    // the same release, signed and whole, is registered
    const ok = await post(body(m, bytes))
    expect(ok.statusCode, ok.body).toBe(201)
    expect(await stored()).toBe(before + 1)
  })

  test("a bridge without a release key registers nothing", async () => {
    const log = pino({ level: "silent" }) // its 503 is logged as a warning
    const bare = buildApp({ store, metrics: createMetrics(), apiTokens: { ops: "rel-ops" }, log })
    await bare.ready()
    const bytes = randomBytes(64)
    const res = await bare.inject({
      method: "POST",
      url: "/releases",
      headers: OPS,
      payload: body(manifestOf("citymeter_picow", "0.4.0", bytes), bytes),
    })
    await bare.close()
    expect([res.statusCode, res.json().error]).toEqual([503, "CM_ERR_NO_RELEASE_KEY"])
    expect((await store.listReleases()).some((r) => r.version === "0.4.0")).toBe(false)
  })
})
