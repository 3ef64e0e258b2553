// `citymeter release`: registers a built program with the bridge as a signed release (issue 23
// item 3). `citymeter release keygen` makes the utility's Ed25519 release key pair; the private key
// stays with whoever signs releases, the bridge gets the public key (RELEASE_PUBLIC_KEY). A release
// is a manifest (board, version, sha256, size) signed with canonicalManifest (bridge/src/releases.ts,
// which the bridge verifies with), uploaded with the bytecode to POST /releases.
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto"
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import {
  DEPLOY_ALIGN,
  manifestOf,
  releaseKeyId,
  repoBoards,
  signManifest,
  type ReleaseManifest,
} from "../bridge/src/releases.js"
import { paths } from "../sim/src/paths.js"
import type { Print } from "./build.js"
import { CliError, usage } from "./errors.js"
import type { BridgeTarget } from "./provision.js"

export const PRIVATE_KEY_FILE = "release-private.pem"
export const PUBLIC_KEY_FILE = "release-public.pem"

/** Writes a new release key pair into `dir`: the private key readable by its owner only (0600). */
export function keygen(dir: string, print: Print): { privateFile: string; publicFile: string; keyId: string } {
  const out = resolve(dir)
  const privateFile = join(out, PRIVATE_KEY_FILE)
  const publicFile = join(out, PUBLIC_KEY_FILE)
  for (const f of [privateFile, publicFile])
    if (existsSync(f)) throw usage(`${f} exists: a release key is never overwritten (pick another --out)`)
  mkdirSync(out, { recursive: true })
  const { privateKey, publicKey } = generateKeyPairSync("ed25519")
  writeFileSync(privateFile, privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600, flag: "wx" })
  chmodSync(privateFile, 0o600) // the umask may have taken bits off, never added: make it exact
  writeFileSync(publicFile, publicKey.export({ type: "spki", format: "pem" }), { mode: 0o644, flag: "wx" })
  const keyId = releaseKeyId(publicKey)
  print(`wrote ${privateFile} (mode 0600: keep it offline, it signs releases) and ${publicFile}`)
  print(`key id ${keyId}; give the bridge the public key: RELEASE_PUBLIC_KEY=${publicFile}`)
  return { privateFile, publicFile, keyId }
}

/** An Ed25519 private key from a PEM file, or a usage error saying what is wrong. */
export function readPrivateKey(file: string): KeyObject {
  if (!existsSync(file)) throw usage(`no such key file: ${file} (citymeter release keygen writes one)`)
  let key: KeyObject
  try {
    key = createPrivateKey(readFileSync(file, "utf8"))
  } catch (e) {
    throw usage(`${file} is not a private key in PEM: ${(e as Error).message}`)
  }
  if (key.asymmetricKeyType !== "ed25519")
    throw usage(
      `${file} is a ${key.asymmetricKeyType} key; releases are signed with Ed25519 (citymeter release keygen)`,
    )
  return key
}

/** The version the firmware's Birth reports (`citymeter-fw <version>`): firmware/gen/version.ts. */
export function firmwareVersion(root = paths.root): string {
  const file = join(root, "firmware/gen/version.ts")
  const m = existsSync(file) ? /VERSION = "([^"]+)"/.exec(readFileSync(file, "utf8")) : null
  if (!m) throw usage(`${file} has no VERSION: run npm run gen (or citymeter build) first`)
  return m[1]
}

export interface ReleaseInput {
  board: string
  keyFile: string
  /** Default: the board's build, .devicescript/boards/<board>/bytecode.devs (citymeter build). */
  bytecode?: string
}

/** The signed release of a build: its manifest, the signature (base64) and the bytes. */
export function prepareRelease(i: ReleaseInput) {
  const boards = repoBoards()
  if (!boards.has(i.board))
    throw usage(`board '${i.board}' is not one of boards/*.board.json (${[...boards].sort().join(", ")})`)
  const key = readPrivateKey(i.keyFile)
  const file = resolve(i.bytecode ?? join(paths.root, ".devicescript/boards", i.board, "bytecode.devs"))
  if (!existsSync(file)) throw usage(`no bytecode at ${file}: run citymeter build --board ${i.board} first`)
  const bytes = readFileSync(file)
  // the build's own record, beside its bytecode (citymeter build): its board and version are the build's
  const buildFile = join(dirname(file), "build.json")
  const built = existsSync(buildFile)
    ? (JSON.parse(readFileSync(buildFile, "utf8")) as { board?: string; version?: string; sha256?: string })
    : {}
  if (built.board && built.board !== i.board)
    throw usage(`${file} was built for board '${built.board}', not '${i.board}' (${buildFile})`)
  const manifest: ReleaseManifest = manifestOf(i.board, built.version ?? firmwareVersion(), bytes)
  if (built.sha256 && built.sha256 !== manifest.sha256)
    throw usage(`${file} is not the bytecode ${buildFile} describes (sha256 differs): build it again`)
  if (manifest.size % DEPLOY_ALIGN !== 0)
    throw usage(`${file} is ${manifest.size} bytes, not a multiple of ${DEPLOY_ALIGN}: the runtime's deploy refuses it`)
  const signature = signManifest(manifest, key).toString("base64")
  const keyId = releaseKeyId(createPublicKey(key))
  return { manifest, signature, bytecode: bytes, keyId, file }
}

const UPLOAD_TIMEOUT_MS = 30_000

/** Uploads a release (POST /releases); a refusal or an unreachable bridge is a CliError naming the code. */
export async function uploadRelease(
  target: BridgeTarget,
  r: { manifest: ReleaseManifest; signature: string; bytecode: Uint8Array },
): Promise<{ created: boolean; release: { id: number; board: string; version: string; sha256: string } }> {
  const url = new URL("releases", target.url)
  const body = JSON.stringify({
    manifest: r.manifest,
    signature: r.signature,
    bytecode: Buffer.from(r.bytecode).toString("base64"),
  })
  const res = await fetch(url, {
    method: "POST",
    headers: { authorization: `Bearer ${target.token}`, "content-type": "application/json" },
    body,
    signal: AbortSignal.timeout(UPLOAD_TIMEOUT_MS),
  }).catch((e: Error & { cause?: { message?: string } }) => {
    throw new CliError(`cannot reach the bridge at ${target.url.href}: ${e.cause?.message ?? e.message}`)
  })
  const text = await res.text()
  let json: { error?: string; message?: string; id?: number; board?: string; version?: string; sha256?: string } = {}
  try {
    json = JSON.parse(text)
  } catch {
    // not our API: described by its status below
  }
  if ((res.status === 201 || res.status === 200) && json.sha256 === r.manifest.sha256)
    return {
      created: res.status === 201,
      release: json as { id: number; board: string; version: string; sha256: string },
    }
  const detail = json.error ? `${json.error}: ${json.message}` : text.slice(0, 200).replace(/\s+/g, " ")
  throw new CliError(`the bridge at ${target.url.href} refused the release: ${res.status} ${detail}`)
}

/** `citymeter release --board … --key … --bridge …`: sign the build and register it. */
export async function release(i: ReleaseInput, target: BridgeTarget, print: Print) {
  const r = prepareRelease(i)
  print(
    `signed ${r.manifest.board} ${r.manifest.version}: ${r.manifest.size} bytes, sha256 ${r.manifest.sha256} (key ${r.keyId})`,
  )
  const { created, release: stored } = await uploadRelease(target, r)
  print(`${created ? "registered" : "already registered"}: release ${stored.id} at ${target.url.href}`)
  return stored
}
