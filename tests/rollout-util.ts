// What the rollout tests of the CLI and the dashboard set up: a signed release registered over
// POST /releases, and meters of a board in the registry (a Birth naming the board, a district)
// without a VM behind them: a rollout takes them, and nothing is ever deployed to them.
import { generateKeyPairSync, randomBytes } from "node:crypto"
import type { FastifyInstance } from "fastify"
import { manifestOf, signManifest } from "../bridge/src/releases.js"
import type { Store } from "../bridge/src/store/store.js"
import { recordBirth } from "../testkit/store-writes.js"

export const BOARD = "citymeter_picow"

/** A release key pair: the PEM of the public half for the bridge (RELEASE_PUBLIC_KEY), the private for signing. */
export function releaseKeys() {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519")
  return {
    publicPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
    privatePem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
  }
}

/** Registers a release of random bytecode for `board`, signed with `privatePem`; its id and size. */
export async function registerRelease(
  app: FastifyInstance,
  privatePem: string,
  opsToken: string,
  version: string,
  board = BOARD,
): Promise<{ id: number; size: number; version: string }> {
  const bytecode = randomBytes(61696)
  const manifest = manifestOf(board, version, bytecode)
  const res = await app.inject({
    method: "POST",
    url: "/releases",
    headers: { authorization: `Bearer ${opsToken}` },
    payload: {
      manifest,
      signature: signManifest(manifest, privatePem).toString("base64"),
      bytecode: bytecode.toString("base64"),
    },
  })
  if (res.statusCode !== 201) throw new Error(`POST /releases: ${res.statusCode} ${res.body}`)
  return { id: res.json().id as number, size: manifest.size, version }
}

/** Meters in the registry that were born as `board`, each in its district (null: none). */
export async function bornMeters(store: Store, meters: Record<string, string | null>, board = BOARD) {
  const at = new Date()
  for (const [meterId, district] of Object.entries(meters)) {
    await store.registerMeter(meterId, at)
    await recordBirth(
      store,
      meterId,
      { firmware: "citymeter-fw 0.0.1", board, boot: 1, seq: 0, intervalS: 60, batch: 1, uptimeEpochMs: at.getTime() },
      at,
    )
    if (district) await store.setLocation(meterId, { lat: 48.2, lon: 16.37, address: null, district })
  }
}

/** --hours that exclude the present (UTC, from two hours on): a rollout with them starts no meter. */
export function hoursNotNow(now = new Date()) {
  const m = now.getUTCHours() * 60 + now.getUTCMinutes()
  const hhmm = (x: number) =>
    `${String(Math.floor((x % 1440) / 60)).padStart(2, "0")}:${String((x % 1440) % 60).padStart(2, "0")}`
  return { from: hhmm(m + 120), to: hhmm(m + 180) }
}
