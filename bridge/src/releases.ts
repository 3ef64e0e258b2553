// Releases (issue 23 item 3): a built program the utility has signed, bound to one board. The
// manifest (board, version, sha256, size) is signed with Ed25519 under the utility's release key
// (`citymeter release keygen`); the bridge holds the public key only (RELEASE_PUBLIC_KEY) and
// registers a release when the signature verifies and the bytes are the manifest's. The CLI signs
// with canonicalManifest below, so both sides sign and verify the same bytes.
import { createHash, createPublicKey, sign, verify, type KeyObject } from "node:crypto"
import { readFileSync } from "node:fs"
import { errors } from "./errors.js"
import { repoBoardIds } from "./tunables/storage-budget.js"
import type { MeterRow } from "./store/store.js"
import type { ReleaseRow, ReleaseStore } from "./store/releases.js"

export interface ReleaseManifest {
  /** A board of this repository: boards/<board>.board.json. */
  board: string
  /** package.json's version when it was built (firmware/gen/version.ts); the Birth says `citymeter-fw <version>`. */
  version: string
  /** SHA-256 (hex) of the bytecode: what the runtime's 0x93 answers once it is deployed. */
  sha256: string
  /** Bytes of bytecode; the runtime's deploy takes only multiples of 32 (docs/ota-spike.md). */
  size: number
}

/** The runtime's deploy refuses a program whose size is not a multiple of this (devsmgr_deploy_start). */
export const DEPLOY_ALIGN = 32
export const BOARD_PATTERN = /^[A-Za-z0-9_]{1,64}$/
export const VERSION_PATTERN = /^[0-9A-Za-z][0-9A-Za-z.+-]{0,63}$/
export const SHA256_PATTERN = /^[0-9a-f]{64}$/

/** Signatures are over this prefix and the canonical manifest: a signed release is never another message. */
const SIGNING_CONTEXT = "citymeter release v1\n"

/** What is wrong with a manifest's fields (empty: nothing). */
export function manifestErrors(m: ReleaseManifest): string[] {
  const why: string[] = []
  if (typeof m.board !== "string" || !BOARD_PATTERN.test(m.board)) why.push(`board must match ${BOARD_PATTERN.source}`)
  if (typeof m.version !== "string" || !VERSION_PATTERN.test(m.version))
    why.push(`version must match ${VERSION_PATTERN.source}`)
  if (typeof m.sha256 !== "string" || !SHA256_PATTERN.test(m.sha256)) why.push("sha256 must be 64 lowercase hex digits")
  if (!Number.isSafeInteger(m.size) || m.size <= 0) why.push("size must be a positive whole number of bytes")
  return why
}

/**
 * The bytes a release signature covers: the signing context, then the manifest as JSON with its
 * four keys in a fixed order (board, version, sha256, size) and no whitespace. Any other key, or a
 * field outside its pattern, is refused: two different manifests never canonicalise alike.
 */
export function canonicalManifest(m: ReleaseManifest): Buffer {
  const why = manifestErrors(m)
  if (why.length) throw new Error(`not a release manifest: ${why.join("; ")}`)
  const extra = Object.keys(m).filter((k) => !["board", "version", "sha256", "size"].includes(k))
  if (extra.length) throw new Error(`not a release manifest: unknown key ${extra.join(", ")}`)
  const json = JSON.stringify({ board: m.board, version: m.version, sha256: m.sha256, size: m.size })
  return Buffer.from(SIGNING_CONTEXT + json, "utf8")
}

/** The manifest of some bytecode. */
export const manifestOf = (board: string, version: string, bytecode: Uint8Array): ReleaseManifest => ({
  board,
  version,
  sha256: createHash("sha256").update(bytecode).digest("hex"),
  size: bytecode.length,
})

/** Signs a manifest with an Ed25519 private key (the CLI's side); the signature, 64 bytes. */
export const signManifest = (m: ReleaseManifest, privateKey: KeyObject | string): Buffer =>
  sign(null, canonicalManifest(m), privateKey)

/** Whether `signature` is the release key's over this manifest. */
export function verifyManifest(m: ReleaseManifest, signature: Uint8Array, publicKey: KeyObject): boolean {
  if (signature.length !== 64) return false
  let data: Buffer
  try {
    data = canonicalManifest(m)
  } catch {
    return false
  }
  return verify(null, data, publicKey, signature)
}

/** An Ed25519 public key from its PEM (SPKI); throws saying what it is otherwise. */
export function releasePublicKey(pem: string): KeyObject {
  // node derives a public key from a private one: the bridge must never be handed the private key
  if (/PRIVATE KEY/.test(pem)) throw new Error("this is a private key: give the bridge the public key only")
  const key = createPublicKey(pem)
  if (key.asymmetricKeyType !== "ed25519")
    throw new Error(`the release key must be an Ed25519 public key (got ${key.asymmetricKeyType ?? key.type})`)
  return key
}

/** A release key's public id: the first 8 bytes of the SHA-256 of its SPKI DER, hex. */
export const releaseKeyId = (key: KeyObject) =>
  createHash("sha256")
    .update(key.export({ type: "spki", format: "der" }))
    .digest("hex")
    .slice(0, 16)

/** The boards a release may be for: this repository's boards/*.board.json. */
export const repoBoards = (): Set<string> => new Set(repoBoardIds())

export interface ReleaseUpload {
  manifest: ReleaseManifest
  /** Base64 of the 64-byte Ed25519 signature; absent or empty: unsigned. */
  signature?: string
  bytecode: Uint8Array
}

export interface ReleaseRules {
  publicKey: KeyObject
  boards: Set<string>
  maxBytes: number
}

/**
 * Why a release upload is refused, as the API's error, or undefined when it may be registered:
 * unsigned, a bad signature, bytes that are not the manifest's (an altered image), a board
 * that is not ours, a size the runtime cannot deploy, or too large. A duplicate (board, version)
 * with other bytes is the store's to find (Store.addRelease).
 */
export function releaseRefusal(u: ReleaseUpload, r: ReleaseRules) {
  const m = u.manifest
  const bad = manifestErrors(m)
  if (bad.length) return errors.CM_ERR_BAD_REQUEST(`manifest: ${bad.join("; ")}`)
  if (!u.signature) return errors.CM_ERR_RELEASE_UNSIGNED()
  const sig = Buffer.from(u.signature, "base64")
  if (sig.toString("base64") !== u.signature || !verifyManifest(m, sig, r.publicKey))
    return errors.CM_ERR_RELEASE_SIGNATURE(releaseKeyId(r.publicKey))
  if (u.bytecode.length > r.maxBytes) return errors.CM_ERR_BODY_TOO_LARGE(r.maxBytes)
  const actual = manifestOf(m.board, m.version, u.bytecode)
  if (actual.size !== m.size || actual.sha256 !== m.sha256)
    return errors.CM_ERR_RELEASE_MISMATCH(
      `${actual.size} B, sha256 ${actual.sha256}`,
      `${m.size} B, sha256 ${m.sha256}`,
    )
  if (!r.boards.has(m.board)) return errors.CM_ERR_RELEASE_BOARD(m.board, [...r.boards].sort().join(", "))
  if (m.size % DEPLOY_ALIGN !== 0) return errors.CM_ERR_RELEASE_SIZE(m.size, DEPLOY_ALIGN)
  return undefined
}

/**
 * The release a meter may be sent, for the rollout: refused when the meter's board (from its
 * Birth) is not the release's, or unknown (never born), or the release is unknown; the stored
 * bytes are checked against the manifest again before they go anywhere.
 */
export async function releaseFor(
  store: Pick<ReleaseStore, "getRelease" | "releaseBytecode">,
  meter: Pick<MeterRow, "meterId" | "board">,
  releaseId: number,
): Promise<{ release: ReleaseRow; bytecode: Uint8Array }> {
  const release = await store.getRelease(releaseId)
  const bytecode = release && (await store.releaseBytecode(releaseId))
  if (!release || !bytecode) throw errors.CM_ERR_NOT_FOUND(`release ${releaseId}`)
  if (meter.board !== release.board)
    throw errors.CM_ERR_WRONG_BOARD(meter.meterId, meter.board ?? "(no birth yet)", releaseId, release.board)
  const actual = manifestOf(release.board, release.version, bytecode)
  if (actual.sha256 !== release.sha256 || actual.size !== release.size)
    throw errors.CM_ERR_RELEASE_MISMATCH(
      `${actual.size} B, sha256 ${actual.sha256}`,
      `${release.size} B, sha256 ${release.sha256}`,
    )
  return { release, bytecode }
}

/** RELEASE_PUBLIC_KEY: the PEM itself, or the path of its file; undefined when unset. */
export function readReleaseKeySetting(raw: string | undefined): string | undefined {
  if (!raw) return undefined
  const pem = raw.includes("-----BEGIN") ? raw : readFileSync(raw, "utf8")
  releasePublicKey(pem)
  return pem
}
