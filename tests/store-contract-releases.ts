// The releases part of the Store contract (issue 23 item 3), run by describeStoreContract
// (tests/store-contract.ts) on both engines: one release per (board, version), a repeat with the
// same bytes is no write, one with other bytes is a conflict that changes nothing; the bytecode
// comes back byte for byte; releaseFor refuses a meter of another board.
import { createHash, randomBytes } from "node:crypto"
import { expect, test } from "vitest"
import { ApiError } from "../bridge/src/errors.js"
import { releaseFor } from "../bridge/src/releases.js"
import type { NewRelease } from "../bridge/src/store/releases.js"
import type { SqlStore } from "../bridge/src/store/sql-store.js"
import type { Store } from "../bridge/src/store/store.js"
import { uid } from "./helpers.js"

const AT = new Date("2026-12-01T00:00:00Z")

export function newRelease(board: string, version: string, bytecode: Uint8Array = randomBytes(96)): NewRelease {
  return {
    board,
    version,
    sha256: createHash("sha256").update(bytecode).digest("hex"),
    size: bytecode.length,
    signature: randomBytes(64),
    keyId: "00112233aabbccdd",
    bytecode,
  }
}

/** The error code a promise rejects with. */
const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => "resolved",
    (e: unknown) => (e instanceof ApiError ? e.code : String(e)),
  )

export function releaseContract(getStore: () => Store) {
  test("releases: one per (board, version); same bytes again writes nothing, other bytes are a conflict", async () => {
    const store = getStore()
    const version = uid("v")
    const r = newRelease("citymeter_picow", version)
    const first = await store.addRelease(r, AT)
    expect(first.kind).toBe("created")
    expect(first.release).toMatchObject({ board: r.board, version, sha256: r.sha256, size: r.size, keyId: r.keyId })
    expect(Buffer.from(first.release.signature).equals(Buffer.from(r.signature))).toBe(true)
    expect(first.release.createdAt.getTime()).toBe(AT.getTime())

    const again = await store.addRelease({ ...r, signature: randomBytes(64) }, new Date(AT.getTime() + 1000))
    expect(again).toEqual({ kind: "exists", release: first.release })

    const other = newRelease("citymeter_picow", version)
    const conflict = await store.addRelease(other, AT)
    expect(conflict).toEqual({ kind: "conflict", release: first.release })
    // nothing of the conflicting release was written
    expect(Buffer.from((await store.releaseBytecode(first.release.id))!).equals(Buffer.from(r.bytecode))).toBe(true)
    expect((await store.listReleases()).filter((x) => x.version === version)).toHaveLength(1)

    // the same version for another board is another release
    const esp = await store.addRelease(newRelease("citymeter_esp32c3", version), AT)
    expect(esp.kind).toBe("created")
    expect(esp.release.id).not.toBe(first.release.id)
  })

  test("releases: listed newest first and by board; read back with their bytecode byte for byte", async () => {
    const store = getStore()
    const board = `b_${randomBytes(4).toString("hex")}`
    const bytes = [randomBytes(64), randomBytes(128)]
    const a = await store.addRelease(newRelease(board, "1.0.0", bytes[0]), AT)
    const b = await store.addRelease(newRelease(board, "1.1.0", bytes[1]), AT)
    expect((await store.listReleases({ board })).map((x) => x.version)).toEqual(["1.1.0", "1.0.0"])
    expect((await store.listReleases({ board, limit: 1 })).map((x) => x.version)).toEqual(["1.1.0"])
    expect(await store.listReleases({ board: `${board}_none` })).toEqual([])
    expect(await store.getRelease(a.release.id)).toEqual(a.release)
    expect(Buffer.from((await store.releaseBytecode(b.release.id))!).equals(bytes[1])).toBe(true)
    expect(await store.getRelease(2 ** 40)).toBeUndefined()
    expect(await store.releaseBytecode(2 ** 40)).toBeUndefined()
  })

  test("releaseFor: a release only for a meter of its board (from its Birth)", async () => {
    const store = getStore()
    const bytecode = randomBytes(160)
    bytecode[0] = 1 // altered below to 0
    const { release } = await store.addRelease(newRelease("citymeter_picow", uid("v"), bytecode), AT)
    const got = await releaseFor(store, { meterId: "m-pico", board: "citymeter_picow" }, release.id)
    expect(got.release).toEqual(release)
    expect(Buffer.from(got.bytecode).equals(bytecode)).toBe(true)
    expect(await codeOf(releaseFor(store, { meterId: "m-esp", board: "citymeter_esp32c3" }, release.id))).toBe(
      "CM_ERR_WRONG_BOARD",
    )
    expect(await codeOf(releaseFor(store, { meterId: "m-new", board: null }, release.id))).toBe("CM_ERR_WRONG_BOARD")
    expect(await codeOf(releaseFor(store, { meterId: "m-pico", board: "citymeter_picow" }, 2 ** 40))).toBe(
      "CM_ERR_NOT_FOUND",
    )
    // bytes altered in the data tier after registration are never handed out
    await (store as SqlStore).db.query(
      `UPDATE releases SET bytecode = overlay(bytecode PLACING '\\x00'::bytea FROM 1 FOR 1) WHERE id = $1`,
      [release.id],
    )
    expect(await codeOf(releaseFor(store, { meterId: "m-pico", board: "citymeter_picow" }, release.id))).toBe(
      "CM_ERR_RELEASE_MISMATCH",
    )
  })
}
