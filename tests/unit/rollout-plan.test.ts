// The rules of a rollout (bridge/src/rollouts/plan.ts), without meters, links or a database:
// stages take every meter once, in stage order; a canary is a share of the meters; the maintenance
// window wraps past midnight; a meter is never started with an alarm open or offline, and never
// at all when it cannot be reached; a stage ends only when nothing is in flight or startable.
import { describe, expect, test } from "vitest"
import { assignStages, blockerOf, inHours, nextStep, stageErrors } from "../../bridge/src/rollouts/plan.js"
import type { RolloutMeterRow, StageSpec } from "../../bridge/src/store/rollouts.js"
import type { MeterRow } from "../../bridge/src/store/store.js"

const fleet = Array.from({ length: 40 }, (_, i) => ({
  meterId: `m-${String(i).padStart(2, "0")}`,
  district: i % 4 === 0 ? "north" : i % 4 === 1 ? "south" : null,
}))

describe("stages", () => {
  test("a canary share, then a district, then all: each meter once, in stage order", () => {
    const stages: StageSpec[] = [
      { kind: "canary", share: 0.1 },
      { kind: "district", district: "north" },
      { kind: "all" },
    ]
    const a = assignStages(fleet, stages, "seed")
    expect(a.length).toBe(40)
    expect(new Set(a.map((x) => x.meterId)).size).toBe(40)
    const of = (s: number) => a.filter((x) => x.stage === s).map((x) => x.meterId)
    expect(of(0).length).toBe(4) // ceil(0.1 × 40)
    const district = new Map(fleet.map((m) => [m.meterId, m.district]))
    expect(of(1).every((id) => district.get(id) === "north")).toBe(true)
    // the north meters the canary did not take
    expect(of(1).length).toBe(10 - of(0).filter((id) => district.get(id) === "north").length)
    expect(of(2).length).toBe(40 - of(0).length - of(1).length)
    expect(a.map((x) => x.stage)).toEqual([...a.map((x) => x.stage)].sort((x, y) => x - y))
    // the same seed picks the same canary; another seed (almost surely) another
    expect(assignStages(fleet, stages, "seed")).toEqual(a)
    expect(of(0)).not.toEqual(
      assignStages(fleet, stages, "other")
        .filter((x) => x.stage === 0)
        .map((x) => x.meterId),
    )
  })

  test("a canary takes at least one meter; without 'all' the meters no stage takes are left out", () => {
    expect(assignStages(fleet.slice(0, 3), [{ kind: "canary", share: 0.01 }], "s").length).toBe(1)
    const north = assignStages(fleet, [{ kind: "district", district: "north" }], "s")
    expect(north.length).toBe(10)
    expect(assignStages([], [{ kind: "canary", share: 0.5 }, { kind: "all" }], "s")).toEqual([])
  })

  test("stages that cannot work are refused, each with its reason", () => {
    expect(stageErrors([{ kind: "canary", share: 0.1 }, { kind: "all" }])).toEqual([])
    expect(stageErrors([])).toEqual(["a rollout needs at least one stage"])
    expect(stageErrors([{ kind: "all" }, { kind: "canary", share: 0.2 }])).toEqual([
      "stage 1: 'all' can only be the last stage",
    ])
    expect(stageErrors([{ kind: "canary", share: 1 }])).toEqual(["stage 1: a canary share is in (0, 1)"])
    expect(
      stageErrors([
        { kind: "district", district: "n" },
        { kind: "district", district: "n" },
      ]),
    ).toEqual(["a district is named in two stages"])
    expect(
      stageErrors(Array.from({ length: 11 }, (_, i) => ({ kind: "district" as const, district: `d${i}` }))),
    ).toEqual(["at most 10 stages"])
  })
})

test("the maintenance window: [from, to) in UTC, wrapping past midnight", () => {
  const at = (hhmm: string) => new Date(`2026-12-07T${hhmm}:00Z`)
  const night = { fromMin: 22 * 60, toMin: 4 * 60 }
  expect(inHours(at("23:30"), night)).toBe(true)
  expect(inHours(at("03:59"), night)).toBe(true)
  expect(inHours(at("04:00"), night)).toBe(false)
  expect(inHours(at("12:00"), night)).toBe(false)
  const day = { fromMin: 60, toMin: 5 * 60 }
  expect(inHours(at("01:00"), day)).toBe(true)
  expect(inHours(at("00:59"), day)).toBe(false)
  expect(inHours(at("05:00"), day)).toBe(false)
  expect(inHours(at("12:00"), null)).toBe(true)
})

describe("which meter may start", () => {
  const meter = (p: Partial<MeterRow> = {}) =>
    ({
      meterId: "m",
      online: true,
      inactive: false,
      board: "citymeter_picow",
      seal: { policy: "sealed", key: new Uint8Array(32), nextKey: null },
      ...p,
    }) as MeterRow
  test("never: unknown, another board, not sealed, no link key; wait: offline, inactive, an alarm open", () => {
    expect(blockerOf(meter(), "citymeter_picow", true, 0)).toBeUndefined()
    expect(blockerOf(undefined, "citymeter_picow", true, 0)?.kind).toBe("never")
    expect(blockerOf(meter({ board: "citymeter_esp32c3" }), "citymeter_picow", true, 0)).toEqual({
      kind: "never",
      why: "board citymeter_esp32c3, not citymeter_picow",
    })
    expect(
      blockerOf(
        meter({ seal: { policy: "open", key: null, nextKey: null } } as Partial<MeterRow>),
        "citymeter_picow",
        true,
        0,
      )?.kind,
    ).toBe("never")
    expect(blockerOf(meter(), "citymeter_picow", false, 0)?.kind).toBe("never")
    expect(blockerOf(meter({ online: false }), "citymeter_picow", true, 0)).toEqual({ kind: "wait", why: "offline" })
    expect(blockerOf(meter({ inactive: true }), "citymeter_picow", true, 0)?.kind).toBe("wait")
    expect(blockerOf(meter(), "citymeter_picow", true, 1)).toEqual({ kind: "wait", why: "an alarm is open" })
  })
})

describe("what a running rollout does next", () => {
  const row = (meterId: string, stage: number, state: RolloutMeterRow["state"]): RolloutMeterRow => ({
    rolloutId: 1,
    meterId,
    stage,
    state,
    written: 0,
    attempts: 0,
    fromRelease: null,
    reason: null,
    startedAt: null,
    updatedAt: new Date(0),
  })
  const yes = () => true
  test("starts at most `room` pending meters of the stages reached, none of a later stage", () => {
    const rows = [row("a", 0, "pending"), row("b", 0, "pending"), row("c", 0, "pending"), row("d", 1, "pending")]
    const s = nextStep(rows, 0, 2, yes, 2)
    expect(s.start.map((r) => r.meterId)).toEqual(["a", "b"])
    expect(s).toMatchObject({ advance: false, finish: false })
    expect(nextStep(rows, 0, 2, yes, 0).start).toEqual([])
  })
  test("advances only with nothing in flight and nothing startable; a waiting meter is carried on", () => {
    const waiting = (r: RolloutMeterRow) => r.meterId !== "a"
    expect(nextStep([row("a", 0, "pending"), row("b", 0, "verifying")], 0, 2, waiting, 5)).toMatchObject({
      advance: false,
    })
    const s = nextStep([row("a", 0, "pending"), row("b", 0, "done"), row("c", 1, "pending")], 0, 2, waiting, 5)
    expect(s).toMatchObject({ start: [], advance: true, finish: false })
    // in the next stage the waiting meter of stage 0 is still a candidate
    expect(
      nextStep([row("a", 0, "pending"), row("c", 1, "pending")], 1, 2, yes, 5).start.map((r) => r.meterId),
    ).toEqual(["a", "c"])
  })
  test("after the last stage a waiting meter keeps the rollout running; it ends when none waits", () => {
    const waiting = (r: RolloutMeterRow) => r.meterId !== "a"
    expect(nextStep([row("a", 0, "pending"), row("b", 1, "done")], 1, 2, waiting, 5)).toMatchObject({
      start: [],
      advance: false,
      finish: false,
    })
    expect(nextStep([row("a", 0, "skipped"), row("b", 1, "done")], 1, 2, waiting, 5)).toMatchObject({ finish: true })
  })
  test("finishes after the last stage; a rolled-back meter is in flight until its rollback ends", () => {
    expect(nextStep([row("a", 0, "done"), row("b", 1, "done")], 1, 2, yes, 5)).toMatchObject({
      finish: true,
      advance: false,
    })
    expect(nextStep([row("a", 0, "rolling_back")], 0, 1, yes, 5)).toMatchObject({ finish: false })
  })
})
