// `citymeter rollout` as a user runs it (a separate process) against a running bridge with a WSSK
// endpoint: a rollout is created with its stages, listed, shown, paused, resumed and cancelled; a
// second rollout of the same meters is refused with its code; watch reprints the progress until the
// rollout is over (exit 0 done, 1 halted); what the CLI can tell is wrong is a usage error (exit 2),
// sent nowhere. The meters are registry rows born as citymeter_picow, no VM: nothing is deployed,
// they stay pending (outside the rollout's hours) or are skipped (not sealed).
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { startService, type Service } from "../../bridge/src/service.js"
import { CITYMETER_BIN, startNode } from "../../testkit/process.js"
import { captureLog, uid, waitFor } from "../helpers.js"
import { BOARD, bornMeters, hoursNotNow, registerRelease, releaseKeys } from "../rollout-util.js"

const OPS = "ro-ops-token"
const READ = "ro-read-token"
/** The CLI with the token in CITYMETER_API_TOKEN (null: none). */
const run = (args: string[], token: string | null = OPS) =>
  startNode([CITYMETER_BIN, ...args], { CITYMETER_API_TOKEN: token ?? undefined })

describe("citymeter rollout against a bridge", () => {
  let svc: Service
  let rel: { id: number; size: number; version: string }
  const p = uid("ro").replace(/[^A-Za-z0-9]/g, "")
  const [n1, n2, s1, s2, x1, x2] = ["n1", "n2", "s1", "s2", "x1", "x2"].map((s) => `${p}-${s}`)
  const esp = `${p}-esp`
  const hours = hoursNotNow()
  let bridge: string[]
  const citymeter = (...args: string[]) => run([...args, ...bridge]).done
  const reading = (...args: string[]) => run([...args, ...bridge], READ).done

  beforeAll(async () => {
    const keys = releaseKeys()
    svc = await startService({
      demo: true,
      databaseUrl: "pglite:memory",
      embeddedMqttPort: 0,
      httpPort: 0,
      apiTokens: { ops: OPS, read: READ },
      releasePublicKey: keys.publicPem,
      wssk: { port: 0, host: "127.0.0.1" },
      clientId: uid("ro-bridge"),
      log: captureLog().log,
    })
    bridge = ["--bridge", svc.httpUrl!]
    rel = await registerRelease(svc.app, keys.privatePem, OPS, "9.1.0")
    await bornMeters(svc.store, { [n1]: "north", [n2]: "north", [s1]: "south", [s2]: "south", [x1]: null, [x2]: null })
    await bornMeters(svc.store, { [esp]: "north" }, "esp32c3_bare")
  }, 180_000)
  afterAll(async () => {
    await svc?.stop()
  })

  let first: number

  test("create: the stages in the order given, over the meters named; list and show it", async () => {
    const c = await citymeter(
      "rollout",
      "create",
      "--release",
      String(rel.id),
      "--canary",
      "0.5",
      "--district",
      "north",
      "--all",
      "--meters",
      `${n1},${n2},${s1}`,
      "--meters",
      s2,
      "--concurrency",
      "2",
      "--verify-s",
      "60",
      "--window-s",
      "30",
      "--hours",
      `${hours.from}-${hours.to}`,
    )
    expect(c.code, c.stderr).toBe(0)
    const m =
      /created rollout (\d+): release (\d+) \(citymeter_picow 9\.1\.0\) to 4 meter\(s\) in 3 stage\(s\): canary 50%, district north, all/.exec(
        c.stdout,
      )
    expect(m, c.stdout).not.toBeNull()
    first = Number(m![1])
    expect(Number(m![2])).toBe(rel.id)
    expect(c.stdout).toMatch(/stage 1\/3: 0\/4 meters ended \(0%\) \[\.{20}\] pending 4/)
    expect(c.stdout).toContain(`follow it: citymeter rollout watch ${first}`)
    const stored = (await svc.store.getRollout(first))!
    expect(stored).toMatchObject({ concurrency: 2, verifyS: 60, windowS: 30, state: "running" })
    expect(stored.stages).toEqual([
      { kind: "canary", share: 0.5 },
      { kind: "district", district: "north" },
      { kind: "all" },
    ])
    // a canary of half the four, then the north meters left, then the rest
    const rows = await svc.store.rolloutMeters(first)
    expect(rows.filter((r) => r.stage === 0)).toHaveLength(2)
    for (const r of rows.filter((r) => r.stage === 1)) expect([n1, n2]).toContain(r.meterId)
    for (const r of rows.filter((r) => r.stage === 2)) expect([s1, s2]).toContain(r.meterId)

    const l = await reading("rollout", "list")
    expect(l.code, l.stderr).toBe(0)
    expect(l.stdout).toMatch(/^ID\s+RELEASE\s+BOARD\s+VERSION\s+STATE\s+STAGE\s+ENDED\s+METERS/)
    expect(l.stdout).toMatch(
      new RegExp(`^${first}\\s+${rel.id}\\s+${BOARD}\\s+9\\.1\\.0\\s+running\\s+1/3\\s+0/4 \\(0%\\)\\s+pending 4`, "m"),
    )

    const s = await reading("rollout", "show", String(first))
    expect(s.code, s.stderr).toBe(0)
    expect(s.stdout).toContain(`rollout ${first}: release ${rel.id} (${BOARD} 9.1.0), running`)
    expect(s.stdout).toContain("stages: 1 canary 50% (current), 2 district north, 3 all")
    expect(s.stdout).toContain(`concurrency 2, verify 60 s, window 30 s, hours ${hours.from}-${hours.to} UTC`)
    expect(s.stdout).toContain("meters: pending 4")
    expect(s.stdout).toMatch(/^METER\s+STAGE\s+STATE\s+WRITTEN\s+ATTEMPTS\s+REASON$/m)
    for (const r of rows)
      expect(s.stdout).toMatch(new RegExp(`^${r.meterId}\\s+${r.stage + 1}\\s+pending\\s+0%\\s+0$`, "m"))
    expect(s.stdout).not.toContain(esp)
  })

  test("a second rollout of a meter already in one is refused: 409 CM_ERR_ROLLOUT_CONFLICT, exit 1", async () => {
    const c = await citymeter("rollout", "create", "--release", String(rel.id), "--all", "--meters", `${x1},${n1}`)
    expect(c.code).toBe(1)
    expect(c.stderr).toMatch(
      new RegExp(
        `citymeter: error: 409 CM_ERR_ROLLOUT_CONFLICT 1 meter\\(s\\) are in another rollout .*${n1} \\(rollout ${first}\\)`,
      ),
    )
    expect(await svc.store.listRollouts()).toHaveLength(1)
  })

  test("pause, resume: the state each time; pausing twice is the bridge's 409; a read token cannot", async () => {
    const ro = await reading("rollout", "pause", String(first))
    expect(ro.code).toBe(1)
    expect(ro.stderr).toMatch(/401 CM_ERR_UNAUTHORIZED .*ops scope/)
    const p1 = await citymeter("rollout", "pause", String(first))
    expect(p1.code, p1.stderr).toBe(0)
    expect(p1.stdout).toContain(`rollout ${first} paused`)
    const p2 = await citymeter("rollout", "pause", String(first))
    expect(p2.code).toBe(1)
    expect(p2.stderr).toContain(`409 CM_ERR_ROLLOUT_STATE rollout ${first} is paused: it cannot be paused`)
    const r = await citymeter("rollout", "resume", String(first))
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain(`rollout ${first} running`)
    expect((await svc.store.getRollout(first))!.state).toBe("running")
  })

  test("watch reprints the progress every 2 s and exits 1 when the rollout halts, with the reason", async () => {
    const w = run(["rollout", "watch", String(first), ...bridge], READ)
    await waitFor(
      "two progress lines",
      async () => (w.out.stdout.match(/ rollout \d+ running, stage/g) ?? []).length >= 2,
      20_000,
    )
    // what the runner does when a meter's update fails: the meter failed, the rollout halted
    const [bad] = await svc.store.rolloutMeters(first)
    const at = new Date()
    await svc.store.updateRolloutMeter(first, bad.meterId, ["pending"], { state: "transferring" }, at)
    await svc.store.updateRolloutMeter(
      first,
      bad.meterId,
      ["transferring"],
      { state: "failed", written: rel.size / 2, reason: "the runtime's hash is not the release's" },
      at,
    )
    await svc.store.setRolloutState(first, ["running"], "halted", `meter ${bad.meterId} failed`, at)
    const done = await w.done
    expect(done.code, done.stderr).toBe(1)
    expect(done.stdout).toMatch(/^\d\d:\d\d:\d\d rollout \d+ running, stage 1\/3: 0\/4 meters ended/m)
    expect(done.stdout).toMatch(
      /rollout \d+ halted, stage 1\/3: 1\/4 meters ended \(25%\) \[#####\.+\] pending 3, failed 1/,
    )
    expect(done.stdout).toContain(`  ${bad.meterId}: failed: the runtime's hash is not the release's`)
    expect(done.stdout).toContain(`rollout ${first} halted: meter ${bad.meterId} failed`)

    const s = await reading("rollout", "show", String(first))
    expect(s.stdout).toContain(`reason: meter ${bad.meterId} failed`)
    expect(s.stdout).toContain(
      `failed or rolled back:\n  ${bad.meterId}: failed: the runtime's hash is not the release's`,
    )
    expect(s.stdout).toMatch(new RegExp(`^${bad.meterId}\\s+\\d\\s+failed\\s+50%\\s+0\\s+the runtime's hash`, "m"))
  })

  test("cancel: the pending meters are skipped and free; watch of a cancelled rollout exits 1 at once", async () => {
    const c = await citymeter("rollout", "cancel", String(first))
    expect(c.code, c.stderr).toBe(0)
    expect(c.stdout).toContain(`rollout ${first} cancelled`)
    expect(c.stdout).toMatch(/4\/4 meters ended \(100%\) \[#{20}\] failed 1, skipped 3/)
    const s = await reading("rollout", "show", String(first), "--state", "skipped")
    expect(s.stdout).toContain("reason: cancelled by an operator")
    expect(s.stdout.match(/\s+skipped\s+0%\s+0\s+cancelled$/gm)).toHaveLength(3)
    const w = await reading("rollout", "watch", String(first))
    expect(w.code).toBe(1)
    expect(w.stdout).toContain(`rollout ${first} cancelled: cancelled by an operator`)
  })

  test("default stages (a 10% canary, then all) over every meter of the board; watch exits 0 when done", async () => {
    const c = await citymeter("rollout", "create", "--release", String(rel.id))
    expect(c.code, c.stderr).toBe(0)
    expect(c.stdout).toMatch(/to 6 meter\(s\) in 2 stage\(s\): canary 10%, all/)
    const id = Number(/created rollout (\d+)/.exec(c.stdout)![1])
    // the meters are not sealed: the runner skips each, and the rollout is done
    const w = await reading("rollout", "watch", String(id))
    expect(w.code, w.stdout + w.stderr).toBe(0)
    expect(w.stdout).toMatch(/rollout \d+ done, stage 2\/2: 6\/6 meters ended \(100%\) \[#{20}\] skipped 6/)
    expect(w.stdout).toContain(`rollout ${id} done`)
    const s = await reading("rollout", "show", String(id))
    expect(s.stdout).toContain(`rollout ${id}: release ${rel.id} (${BOARD} 9.1.0), done`)
    expect(s.stdout.match(/skipped\s+0%\s+0\s+not sealed with a key/g)).toHaveLength(6)
    const l = await reading("rollout", "list")
    expect(l.stdout.trim().split("\n")).toHaveLength(3)
    expect(l.stdout.split("\n")[1]).toMatch(new RegExp(`^${id}\\s.*\\sdone\\s+2/2\\s+6/6 \\(100%\\)\\s+skipped 6`))
  })

  test("the bridge's refusals are `<status> <code> <message>`, exit 1", async () => {
    const nf = await reading("rollout", "show", "999")
    expect(nf.code).toBe(1)
    expect(nf.stderr).toContain("citymeter: error: 404 CM_ERR_NOT_FOUND no rollout 999")
    const wrong = await run(["rollout", "list", ...bridge], "not-the-token").done
    expect(wrong.code).toBe(1)
    expect(wrong.stderr).toMatch(/401 CM_ERR_UNAUTHORIZED/)
    const noRelease = await citymeter("rollout", "create", "--release", "4242", "--all")
    expect(noRelease.code).toBe(1)
    expect(noRelease.stderr).toContain("404 CM_ERR_NOT_FOUND no release 4242")
    const espMeter = await citymeter("rollout", "create", "--release", String(rel.id), "--all", "--meters", esp)
    expect(espMeter.code).toBe(1)
    expect(espMeter.stderr).toMatch(/409 CM_ERR_WRONG_BOARD meter .*-esp is a esp32c3_bare/)
  })

  test("what the CLI can tell is wrong is a usage error (exit 2), and nothing is sent", async () => {
    const before = (await svc.store.listRollouts()).length
    const cases: [string[], RegExp][] = [
      [["rollout", "create", "--all"], /needs --release/],
      [["rollout", "create", "--release", "x1"], /--release must be a whole number/],
      [["rollout", "create", "--release", "1", "--canary", "1.5"], /--canary must be a share between 0 and 1/],
      [["rollout", "create", "--release", "1", "--all", "--canary", "0.1"], /--all can only be the last stage/],
      [["rollout", "create", "--release", "1", "--hours", "25:00-01:00"], /--hours must be HH:MM-HH:MM/],
      [
        ["rollout", "create", "--release", "1", "--concurrency", "0"],
        /--concurrency must be a whole number in 1\.\.100/,
      ],
      [["rollout", "create", "--release", "1", "--meters", "no good"], /--meters: 'no good' is not a meter id/],
      [["rollout", "show", "abc"], /rollout id must be a positive whole number/],
      [["rollout", "frobnicate", "1"], /unknown command 'frobnicate'/],
      [["rollout", "show"], /missing required argument 'id'/],
    ]
    for (const [args, why] of cases) {
      const r = await citymeter(...args)
      expect(r.code, `${args.join(" ")}: ${r.stderr}`).toBe(2)
      expect(r.stderr).toMatch(why)
    }
    const noBridge = await run(["rollout", "list"]).done
    expect(noBridge.code).toBe(2)
    expect(noBridge.stderr).toMatch(/rollout needs --bridge/)
    const noToken = await run(["rollout", "list", ...bridge], null).done
    expect(noToken.code).toBe(2)
    expect(noToken.stderr).toMatch(/needs the bridge's API token/)
    expect(await svc.store.listRollouts()).toHaveLength(before)
  }, 120_000)
})
