// The rollouts part of the Store contract (issue 23 items 4-5), run by describeStoreContract on
// both engines: a rollout and its meters in their stages; one rollout at a time per meter, also
// when two are created at once; state changes only from the states named; cancelling skips the
// pending meters and frees them; the rollback image is found by board and hash.
import { expect, test } from "vitest"
import type { Store } from "../bridge/src/store/store.js"
import { uid } from "./helpers.js"
import { newRelease } from "./store-contract-releases.js"

const AT = new Date("2026-12-01T00:00:00Z")
const later = (s: number) => new Date(AT.getTime() + s * 1000)

export function rolloutContract(getStore: () => Store) {
  const knobs = {
    stages: [{ kind: "canary" as const, share: 0.5 }, { kind: "all" as const }],
    concurrency: 2,
    verifyS: 60,
    windowS: 30,
    hours: null,
  }

  test("rollouts: created with their meters per stage; one rollout per meter, also when two race", async () => {
    const store = getStore()
    const rel = await store.addRelease(newRelease("citymeter_picow", uid("v")), AT)
    const [a, b, c] = [uid("ro"), uid("ro"), uid("ro")]
    const out = await store.createRollout(
      { releaseId: rel.release.id, ...knobs, hours: { fromMin: 120, toMin: 300 } },
      [
        { meterId: a, stage: 0 },
        { meterId: b, stage: 1 },
      ],
      AT,
    )
    expect(out.kind).toBe("created")
    if (out.kind !== "created") return
    expect(out.rollout).toMatchObject({
      releaseId: rel.release.id,
      board: "citymeter_picow",
      version: rel.release.version,
      state: "running",
      stage: 0,
      concurrency: 2,
      verifyS: 60,
      windowS: 30,
      hours: { fromMin: 120, toMin: 300 },
      counts: { pending: 2 },
    })
    expect(out.rollout.stages).toEqual(knobs.stages)
    expect((await store.getRollout(out.rollout.id))?.counts).toEqual({ pending: 2 })
    const rows = await store.rolloutMeters(out.rollout.id)
    expect(rows.map((r) => [r.meterId, r.stage, r.state, r.written, r.attempts])).toEqual(
      [
        [a, 0, "pending", 0, 0],
        [b, 1, "pending", 0, 0],
      ].sort((x, y) => (x[0] < y[0] ? -1 : 1)),
    )

    // b is taken: a second rollout with it is refused whole, and names it
    const second = await store.createRollout(
      { releaseId: rel.release.id, ...knobs },
      [
        { meterId: c, stage: 0 },
        { meterId: b, stage: 0 },
      ],
      AT,
    )
    expect(second).toEqual({ kind: "conflict", meters: [{ meterId: b, rolloutId: out.rollout.id }] })
    expect((await store.rolloutMeters(out.rollout.id)).length).toBe(2)

    // two at once for the same new meter: exactly one wins
    const d = uid("ro")
    const race = await Promise.all(
      [0, 1, 2].map(() => store.createRollout({ releaseId: rel.release.id, ...knobs }, [{ meterId: d, stage: 0 }], AT)),
    )
    expect(race.filter((r) => r.kind === "created").length).toBe(1)
    expect(race.filter((r) => r.kind === "conflict").length).toBe(2)
  })

  test("rollouts: meter states change only from the states named; a final state frees the meter", async () => {
    const store = getStore()
    const rel = await store.addRelease(newRelease("citymeter_picow", uid("v")), AT)
    const m = uid("ro")
    const out = await store.createRollout({ releaseId: rel.release.id, ...knobs }, [{ meterId: m, stage: 0 }], AT)
    if (out.kind !== "created") throw new Error("not created")
    const id = out.rollout.id
    expect(await store.updateRolloutMeter(id, m, ["verifying"], { state: "done" }, later(1))).toBe(false)
    expect(
      await store.updateRolloutMeter(
        id,
        m,
        ["pending"],
        { state: "transferring", attempts: 1, started: true },
        later(2),
      ),
    ).toBe(true)
    expect(await store.updateRolloutMeter(id, m, ["pending"], { state: "transferring" }, later(3))).toBe(false)
    expect(
      await store.updateRolloutMeter(id, m, ["transferring"], { written: 640, fromRelease: rel.release.id }, later(4)),
    ).toBe(true)
    let [row] = await store.rolloutMeters(id)
    expect(row).toMatchObject({
      state: "transferring",
      written: 640,
      attempts: 1,
      fromRelease: rel.release.id,
      reason: null,
    })
    expect(row.startedAt?.getTime()).toBe(later(2).getTime())
    expect(row.updatedAt.getTime()).toBe(later(4).getTime())
    // still active: another rollout cannot take it
    const busy = await store.createRollout({ releaseId: rel.release.id, ...knobs }, [{ meterId: m, stage: 0 }], AT)
    expect(busy.kind).toBe("conflict")
    expect(
      await store.updateRolloutMeter(id, m, ["transferring"], { state: "failed", reason: "no link" }, later(5)),
    ).toBe(true)
    ;[row] = await store.rolloutMeters(id, { state: "failed" })
    expect(row).toMatchObject({ meterId: m, state: "failed", reason: "no link" })
    expect(await store.rolloutMeters(id, { state: "pending" })).toEqual([])
    // ended: free for the next rollout
    expect(
      (await store.createRollout({ releaseId: rel.release.id, ...knobs }, [{ meterId: m, stage: 0 }], AT)).kind,
    ).toBe("created")
  })

  test("rollouts: state changes from named states; cancel skips the pending meters; stages advance once", async () => {
    const store = getStore()
    const rel = await store.addRelease(newRelease("citymeter_picow", uid("v")), AT)
    const [a, b] = [uid("ro"), uid("ro")]
    const out = await store.createRollout(
      { releaseId: rel.release.id, ...knobs },
      [
        { meterId: a, stage: 0 },
        { meterId: b, stage: 1 },
      ],
      AT,
    )
    if (out.kind !== "created") throw new Error("not created")
    const id = out.rollout.id
    expect(await store.advanceStage(id, 1, later(1))).toBe(false)
    expect(await store.advanceStage(id, 0, later(1))).toBe(true)
    expect(await store.advanceStage(id, 0, later(1))).toBe(false)
    expect((await store.getRollout(id))?.stage).toBe(1)
    expect(await store.setRolloutState(id, ["paused"], "running", null, later(2))).toBe(false)
    expect(await store.setRolloutState(id, ["running"], "paused", null, later(2))).toBe(true)
    expect(await store.advanceStage(id, 1, later(2))).toBe(false) // only a running rollout advances
    expect(await store.rolloutsIn(["paused"]).then((rs) => rs.some((r) => r.id === id))).toBe(true)
    expect(await store.rolloutsIn(["running"]).then((rs) => rs.some((r) => r.id === id))).toBe(false)
    await store.updateRolloutMeter(id, a, ["pending"], { state: "transferring" }, later(3))
    expect(await store.setRolloutState(id, ["running", "paused"], "cancelled", "by an operator", later(4))).toBe(true)
    const r = await store.getRollout(id)
    expect(r).toMatchObject({ state: "cancelled", reason: "by an operator", counts: { transferring: 1, skipped: 1 } })
    expect((await store.rolloutMeters(id, { state: "skipped" }))[0]).toMatchObject({ meterId: b, reason: "cancelled" })
    // b is free, a (in flight) is not
    const next = await store.createRollout(
      { releaseId: rel.release.id, ...knobs },
      [
        { meterId: a, stage: 0 },
        { meterId: b, stage: 0 },
      ],
      AT,
    )
    expect(next).toEqual({ kind: "conflict", meters: [{ meterId: a, rolloutId: id }] })
    expect((await store.listRollouts(1000)).map((x) => x.id)).toContain(id)
  })

  test("rollouts: the rollback image is the release of the board with the running program's hash", async () => {
    const store = getStore()
    const r = newRelease("citymeter_picow", uid("v"))
    const rel = await store.addRelease(r, AT)
    expect(await store.releaseBySha("citymeter_picow", r.sha256)).toBe(rel.release.id)
    expect(await store.releaseBySha("citymeter_esp32c3", r.sha256)).toBeUndefined()
    expect(await store.releaseBySha("citymeter_picow", "0".repeat(64))).toBeUndefined()
  })
}
