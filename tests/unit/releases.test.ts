// Releases (issue 23 item 3): the manifest's canonical bytes, Ed25519 signatures over them, and
// what the bridge refuses before anything is stored (bridge/src/releases.ts); the CLI's key pair.
import { generateKeyPairSync, randomBytes } from "node:crypto"
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, test } from "vitest"
import { configFromEnv, ServiceConfigError } from "../../bridge/src/config.js"
import {
  canonicalManifest,
  manifestOf,
  releaseKeyId,
  releasePublicKey,
  releaseRefusal,
  signManifest,
  verifyManifest,
  type ReleaseManifest,
} from "../../bridge/src/releases.js"
import { keygen, prepareRelease } from "../../cli/release.js"

const pair = () => generateKeyPairSync("ed25519")
const M: ReleaseManifest = { board: "citymeter_picow", version: "0.2.0", sha256: "ab".repeat(32), size: 61696 }

describe("release manifest", () => {
  test("canonical bytes: a context line, then the four keys in a fixed order, whatever order they came in", () => {
    const expected =
      'citymeter release v1\n{"board":"citymeter_picow","version":"0.2.0","sha256":"' +
      "ab".repeat(32) +
      '","size":61696}'
    expect(canonicalManifest(M).toString("utf8")).toBe(expected)
    const shuffled = { size: 61696, sha256: "ab".repeat(32), version: "0.2.0", board: "citymeter_picow" }
    expect(canonicalManifest(shuffled).equals(canonicalManifest(M))).toBe(true)
  })

  test("a field outside its pattern or an extra key is no manifest", () => {
    for (const bad of [
      { ...M, board: "pico w" },
      { ...M, version: "" },
      { ...M, sha256: "AB".repeat(32) },
      { ...M, sha256: "ab" },
      { ...M, size: 0 },
      { ...M, size: 1.5 },
      { ...M, extra: 1 },
    ])
      expect(() => canonicalManifest(bad as ReleaseManifest), JSON.stringify(bad)).toThrow(/not a release manifest/)
  })

  test("a signature verifies under its key over its manifest only", () => {
    const { privateKey, publicKey } = pair()
    const sig = signManifest(M, privateKey)
    expect(sig).toHaveLength(64)
    expect(verifyManifest(M, sig, publicKey)).toBe(true)
    // every field is covered
    for (const changed of [
      { ...M, board: "citymeter_esp32c3" },
      { ...M, version: "0.2.1" },
      { ...M, sha256: "cd".repeat(32) },
      { ...M, size: 61728 },
    ])
      expect(verifyManifest(changed, sig, publicKey), JSON.stringify(changed)).toBe(false)
    // another key, a flipped bit, a short signature
    expect(verifyManifest(M, sig, pair().publicKey)).toBe(false)
    const flipped = Buffer.from(sig)
    flipped[10] ^= 1
    expect(verifyManifest(M, flipped, publicKey)).toBe(false)
    expect(verifyManifest(M, sig.subarray(0, 63), publicKey)).toBe(false)
  })

  test("the release key must be Ed25519; its id is stable", () => {
    const { publicKey } = pair()
    const pem = publicKey.export({ type: "spki", format: "pem" }) as string
    expect(releaseKeyId(releasePublicKey(pem))).toBe(releaseKeyId(publicKey))
    expect(releaseKeyId(publicKey)).toMatch(/^[0-9a-f]{16}$/)
    expect(releaseKeyId(publicKey)).not.toBe(releaseKeyId(pair().publicKey))
    const ec = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ type: "spki", format: "pem" })
    expect(() => releasePublicKey(ec as string)).toThrow(/Ed25519/)
    const priv = pair().privateKey.export({ type: "pkcs8", format: "pem" }) as string
    expect(() => releasePublicKey(priv)).toThrow(/private key/)
  })
})

describe("what the bridge refuses before storing a release", () => {
  const { privateKey, publicKey } = pair()
  const rules = { publicKey, boards: new Set(["citymeter_picow", "citymeter_esp32c3"]), maxBytes: 1024 }
  const bytecode = randomBytes(256)
  const signed = (m: ReleaseManifest, bytes = bytecode, key = privateKey) => ({
    manifest: m,
    signature: signManifest(m, key).toString("base64"),
    bytecode: bytes,
  })
  const good = manifestOf("citymeter_picow", "0.2.0", bytecode)
  const code = (u: Parameters<typeof releaseRefusal>[0]) => releaseRefusal(u, rules)?.code

  test("a signed release of our board with its own bytes passes", () => {
    expect(code(signed(good))).toBeUndefined()
  })

  test("each refusal has its code", () => {
    expect(code({ manifest: good, bytecode })).toBe("CM_ERR_RELEASE_UNSIGNED")
    expect(code({ manifest: good, signature: "", bytecode })).toBe("CM_ERR_RELEASE_UNSIGNED")
    expect(code(signed(good, bytecode, pair().privateKey))).toBe("CM_ERR_RELEASE_SIGNATURE")
    // a signature over another manifest
    const other = signed(manifestOf("citymeter_picow", "0.2.1", bytecode))
    expect(code({ ...signed(good), signature: other.signature })).toBe("CM_ERR_RELEASE_SIGNATURE")
    const altered = Buffer.from(bytecode)
    altered[100] ^= 0xff
    expect(code(signed(good, altered))).toBe("CM_ERR_RELEASE_MISMATCH")
    expect(code(signed(good, bytecode.subarray(0, 224)))).toBe("CM_ERR_RELEASE_MISMATCH")
    const nope = manifestOf("citymeter_nope", "0.2.0", bytecode)
    expect(code(signed(nope))).toBe("CM_ERR_RELEASE_BOARD")
    const odd = randomBytes(250)
    expect(code(signed(manifestOf("citymeter_picow", "0.2.0", odd), odd))).toBe("CM_ERR_RELEASE_SIZE")
    const big = randomBytes(1056)
    expect(code(signed(manifestOf("citymeter_picow", "0.2.0", big), big))).toBe("CM_ERR_BODY_TOO_LARGE")
    expect(code({ ...signed(good), manifest: { ...good, board: "a b" } })).toBe("CM_ERR_BAD_REQUEST")
  })
})

describe("citymeter release: the key pair and the signed build", () => {
  test("keygen writes the private key 0600 and the public key, and never overwrites them", () => {
    const dir = mkdtempSync(join(tmpdir(), "cm-release-"))
    const k = keygen(dir, () => {})
    expect(statSync(k.privateFile).mode & 0o777).toBe(0o600)
    const pub = releasePublicKey(readFileSync(k.publicFile, "utf8"))
    expect(releaseKeyId(pub)).toBe(k.keyId)
    expect(() => keygen(dir, () => {})).toThrow(/never overwritten/)
    // the bridge takes the public key as a file path or as the PEM itself
    expect(configFromEnv({ RELEASE_PUBLIC_KEY: k.publicFile }).releasePublicKey).toBe(
      readFileSync(k.publicFile, "utf8"),
    )
    const pem = readFileSync(k.publicFile, "utf8")
    expect(configFromEnv({ RELEASE_PUBLIC_KEY: pem }).releasePublicKey).toBe(pem)
    expect(() => configFromEnv({ RELEASE_PUBLIC_KEY: k.privateFile })).toThrow(ServiceConfigError)
    expect(configFromEnv({}).releasePublicKey).toBeUndefined()
  })

  test("prepareRelease signs the build's manifest so that the bridge's check passes", () => {
    const dir = mkdtempSync(join(tmpdir(), "cm-release-"))
    const k = keygen(dir, () => {})
    const bytes = randomBytes(320)
    const file = join(dir, "bytecode.devs")
    writeFileSync(file, bytes)
    writeFileSync(join(dir, "build.json"), JSON.stringify({ board: "citymeter_picow", version: "9.8.7" }))
    const r = prepareRelease({ board: "citymeter_picow", keyFile: k.privateFile, bytecode: file })
    expect(r.manifest).toEqual(manifestOf("citymeter_picow", "9.8.7", bytes))
    const publicKey = releasePublicKey(readFileSync(k.publicFile, "utf8"))
    const rules = { publicKey, boards: new Set(["citymeter_picow"]), maxBytes: 4096 }
    expect(releaseRefusal({ ...r, bytecode: bytes }, rules)).toBeUndefined()
    // the CLI refuses what the bridge would: another board's build, a size the runtime cannot deploy
    expect(() => prepareRelease({ board: "citymeter_esp32c3", keyFile: k.privateFile, bytecode: file })).toThrow(
      /built for board 'citymeter_picow'/,
    )
    writeFileSync(file, randomBytes(321))
    writeFileSync(join(dir, "build.json"), "{}")
    expect(() => prepareRelease({ board: "citymeter_picow", keyFile: k.privateFile, bytecode: file })).toThrow(
      /not a multiple of 32/,
    )
    expect(() => prepareRelease({ board: "citymeter_picow", keyFile: k.publicFile, bytecode: file })).toThrow(
      /not a private key/,
    )
  })
})
