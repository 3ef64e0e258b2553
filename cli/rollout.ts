// `citymeter rollout`: sends a registered release to the fleet in stages and follows it (issue 23),
// through the bridge's rollout routes (bridge/src/routes/rollouts.ts): create, list, show, watch,
// pause, resume, cancel. A refusal by the bridge is one line, `<status> <code> <message>`, exit 1;
// what the CLI can tell is wrong before sending anything is a usage error, exit 2.
import { setTimeout as sleep } from "node:timers/promises"
import { Command } from "commander"
import { isMeterId, METER_ID_RULE } from "../bridge/src/topics.js"
import type { StageSpec } from "../bridge/src/store/rollouts.js"
import type { Print } from "./build.js"
import { CliError, usage } from "./errors.js"
import { bridgeTarget, type BridgeTarget } from "./provision.js"
import {
  OVER,
  describeRollout,
  meterTable,
  problems,
  progressLine,
  rolloutTable,
  stageLabel,
  type Rollout,
  type RolloutMeter,
} from "./rollout-format.js"

const TIMEOUT_MS = 15_000
/** How often `watch` reads the rollout, ms. */
export const WATCH_MS = 2000
/** Reads in a row that may fail (the bridge unreachable) before `watch` gives up. */
const WATCH_MISSES = 5
const PAGE = 1000

/** The bridge refused (an HTTP status with the API's error code): `<status> <code> <message>`. */
export class BridgeRefusal extends CliError {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(`${status} ${code} ${message}`)
  }
}

/** One call of the bridge's API with the bearer token; its JSON answer, or a CliError. */
export async function bridgeCall<T>(
  target: BridgeTarget,
  method: "GET" | "POST" | "PUT" | "DELETE",
  path: string,
  body?: object,
) {
  const res = await fetch(new URL(path, target.url), {
    method,
    headers: {
      authorization: `Bearer ${target.token}`,
      ...(body ? { "content-type": "application/json" } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(TIMEOUT_MS),
  }).catch((e: Error & { cause?: { message?: string } }) => {
    const why = e.name === "TimeoutError" ? `no answer within ${TIMEOUT_MS / 1000} s` : (e.cause?.message ?? e.message)
    throw new CliError(`cannot reach the bridge at ${target.url.href}: ${why}`)
  })
  const text = await res.text()
  let json: Record<string, unknown> | undefined
  try {
    json = JSON.parse(text) as Record<string, unknown>
  } catch {
    // not our API: described by its status below
  }
  if (res.ok && json) return json as T
  if (res.ok)
    throw new CliError(`${target.url.href} answered ${res.status} but not as a citymeter bridge: is --bridge its API?`)
  if (typeof json?.error === "string") throw new BridgeRefusal(res.status, json.error, String(json.message ?? ""))
  throw new BridgeRefusal(res.status, "(not a citymeter answer)", text.slice(0, 200).replace(/\s+/g, " "))
}

export const rolloutApi = (t: BridgeTarget) => ({
  create: (body: object) => bridgeCall<Rollout>(t, "POST", "rollouts", body),
  list: (limit: number) => bridgeCall<{ rollouts: Rollout[] }>(t, "GET", `rollouts?limit=${limit}`),
  get: (id: number) => bridgeCall<Rollout>(t, "GET", `rollouts/${id}`),
  act: (id: number, action: "pause" | "resume" | "cancel") =>
    bridgeCall<Rollout>(t, "POST", `rollouts/${id}/${action}`),
  /** Every meter of the rollout (all pages), and the release's size in bytes. */
  async meters(id: number, state?: string): Promise<{ size: number; meters: RolloutMeter[] }> {
    const out: RolloutMeter[] = []
    for (let after: string | undefined; ;) {
      const q = new URLSearchParams({ limit: String(PAGE) })
      if (state) q.set("state", state)
      if (after) q.set("after", after)
      const page = await bridgeCall<{ size: number; meters: RolloutMeter[] }>(t, "GET", `rollouts/${id}/meters?${q}`)
      out.push(...page.meters)
      if (page.meters.length < PAGE) return { size: page.size, meters: out }
      after = page.meters[page.meters.length - 1].meterId
    }
  },
})

/** A whole number in [min, max], or a usage error naming the option. */
export function intIn(name: string, v: string, min: number, max: number): number {
  const n = Number(v)
  if (!/^\d+$/.test(v.trim()) || n < min || n > max) throw usage(`${name} must be a whole number in ${min}..${max}`)
  return n
}

export const rolloutId = (v: string) => {
  if (!/^[1-9][0-9]{0,14}$/.test(v)) throw usage(`rollout id must be a positive whole number (got '${v}')`)
  return Number(v)
}

/** The stages as given on the command line, in their order; default: a 10% canary, then all. */
export function stagesOf(given: { kind: "canary" | "district" | "all"; value?: string }[]): StageSpec[] {
  if (!given.length) return [{ kind: "canary", share: 0.1 }, { kind: "all" }]
  return given.map((g, i) => {
    if (g.kind === "canary") {
      const share = Number(g.value)
      if (!/^(0?\.\d+|0)$/.test(g.value ?? "") || !(share > 0 && share < 1))
        throw usage(`--canary must be a share between 0 and 1, e.g. 0.1 (got '${g.value}')`)
      return { kind: "canary", share }
    }
    if (g.kind === "district") {
      const district = (g.value ?? "").trim()
      if (!district || district.length > 120) throw usage("--district needs a district name (1-120 characters)")
      return { kind: "district", district }
    }
    if (i !== given.length - 1) throw usage("--all can only be the last stage")
    return { kind: "all" }
  })
}

const HOURS = /^(([01][0-9]|2[0-3]):[0-5][0-9])-(([01][0-9]|2[0-3]):[0-5][0-9])$/
export function hoursOf(v: string) {
  const m = HOURS.exec(v.trim())
  if (!m || m[1] === m[3]) throw usage(`--hours must be HH:MM-HH:MM in UTC, two different times (got '${v}')`)
  return { from: m[1], to: m[3] }
}

export function metersOf(v: string[]) {
  const ids = v.flatMap((s) => s.split(",")).map((s) => s.trim())
  const bad = ids.filter((id) => !isMeterId(id))
  if (!ids.length || bad.length) throw usage(`--meters: '${bad[0] ?? ""}' is not a meter id (${METER_ID_RULE})`)
  return [...new Set(ids)]
}

interface CreateOptions {
  release?: string
  concurrency?: string
  verifyS?: string
  windowS?: string
  hours?: string
  meters?: string[]
}

/** The POST /rollouts body of `rollout create`'s options; every mistake is a usage error. */
export function createBody(o: CreateOptions, stages: { kind: "canary" | "district" | "all"; value?: string }[]) {
  if (o.release === undefined) throw usage("rollout create needs --release <id> (citymeter release prints it)")
  return {
    releaseId: intIn("--release", o.release, 1, Number.MAX_SAFE_INTEGER),
    stages: stagesOf(stages),
    ...(o.concurrency !== undefined ? { concurrency: intIn("--concurrency", o.concurrency, 1, 100) } : {}),
    ...(o.verifyS !== undefined ? { verifyS: intIn("--verify-s", o.verifyS, 10, 3600) } : {}),
    ...(o.windowS !== undefined ? { windowS: intIn("--window-s", o.windowS, 10, 3600) } : {}),
    ...(o.hours !== undefined ? { hours: hoursOf(o.hours) } : {}),
    ...(o.meters !== undefined ? { meters: metersOf(o.meters) } : {}),
  }
}

/** `show`: the rollout, the failed and rolled-back meters with their reasons, then every meter. */
export async function show(api: ReturnType<typeof rolloutApi>, id: number, print: Print, state?: string) {
  const [r, m] = await Promise.all([api.get(id), api.meters(id, state)])
  for (const l of describeRollout(r)) print(l)
  const bad = problems(m.meters)
  if (bad.length) {
    print("failed or rolled back:")
    for (const l of bad) print(l)
  }
  print("")
  for (const l of meterTable(m.meters, m.size)) print(l)
  return r
}

/**
 * `watch`: the progress line and the meters with an update in hand, every `everyMs`, until the
 * rollout is over. Returns the exit code: 0 done, 1 halted or cancelled.
 */
export async function watchRollout(
  api: ReturnType<typeof rolloutApi>,
  id: number,
  print: Print,
  everyMs = WATCH_MS,
): Promise<number> {
  let misses = 0
  for (;;) {
    let r: Rollout
    let busy: RolloutMeter[] = []
    let size = 0
    try {
      r = await api.get(id)
      if (!OVER.has(r.state)) {
        const inHand = await Promise.all(
          (["transferring", "verifying", "rolling_back"] as const).map((s) => api.meters(id, s)),
        )
        busy = inHand.flatMap((x) => x.meters)
        size = inHand[0].size
      }
      misses = 0
    } catch (e) {
      // the bridge answered a refusal (no such rollout, a wrong token): watching longer does not help
      if (e instanceof BridgeRefusal || ++misses >= WATCH_MISSES) throw e
      console.error(`citymeter: ${(e as Error).message} (trying again)`)
      await sleep(everyMs)
      continue
    }
    print(`${new Date().toISOString().slice(11, 19)} ${progressLine(r)}`)
    for (const m of busy)
      print(
        `  ${m.meterId}: ${m.state}${m.state === "verifying" ? "" : ` ${Math.floor((m.written / (m.size || size || 1)) * 100)}%`}`,
      )
    if (OVER.has(r.state)) {
      const { meters } = await api.meters(id)
      for (const l of problems(meters)) print(l)
      if (r.state === "done") {
        print(`rollout ${id} done`)
        return 0
      }
      print(`rollout ${id} ${r.state}${r.reason ? `: ${r.reason}` : ""}`)
      return 1
    }
    await sleep(everyMs)
  }
}

/** --bridge and --token on a subcommand of a verb that talks to the bridge's API with a `scope` token. */
export const withBridge = (c: Command, scope: string) =>
  c
    .option("--bridge <url>", "the bridge's HTTP API, http(s)://host:port")
    .option("--token <token>", `the bridge's ${scope} token (or set CITYMETER_API_TOKEN)`)

/** The bridge withBridge's options name (the token from CITYMETER_API_TOKEN when not given); `verb` names the command in the error. */
export function requiredBridge(verb: string, o: { bridge?: string; token?: string }): BridgeTarget {
  if (!o.bridge) throw usage(`${verb} needs --bridge <url> (the bridge's HTTP API)`)
  return bridgeTarget(o.bridge, o.token ?? process.env.CITYMETER_API_TOKEN)
}

/** Adds `rollout` and its subcommands to the program. */
export function rolloutCommand(program: Command, print: Print) {
  const target = (o: { bridge?: string; token?: string }) => rolloutApi(requiredBridge("rollout", o))

  const root = program
    .command("rollout")
    .description("send a registered release to the fleet in stages and follow it (the bridge's /rollouts)")

  // the stage options in the order given: commander reports each occurrence as an event
  const given: { kind: "canary" | "district" | "all"; value?: string }[] = []
  const create = withBridge(root.command("create"), "ops")
    .description(
      "start a rollout of a release to the meters of its board: stages in the order given (default: --canary 0.1 --all)",
    )
    .option("--release <id>", "the release's id (citymeter release prints it)")
    .option("--canary <share>", "a stage: this share of the meters left, e.g. 0.1")
    .option("--district <name>", "a stage: the meters left in this district (repeatable)")
    .option("--all", "the last stage: every meter left")
    .option("--concurrency <n>", "meters updated at once, 1..100 (bridge default 5)")
    .option("--verify-s <s>", "how long an updated meter has to send the new version's Birth, 10..3600 (default 300)")
    .option("--window-s <s>", "the update window sent to each meter, 10..3600 s (default 120)")
    .option("--hours <HH:MM-HH:MM>", "start meters only between these UTC times (wraps past midnight)")
    .option("--meters <ids...>", "only these meters, comma-separated (default: every meter of the board)")
    .addHelpText(
      "after",
      "\nExample:\n  citymeter rollout create --release 7 --canary 0.05 --district north --all --hours 01:00-05:00 --bridge https://bridge.city.example",
    )
    .action(async (o) => {
      const body = createBody(o, given)
      const api = target(o)
      const r = await api.create(body)
      print(
        `created rollout ${r.id}: release ${r.releaseId} (${r.board} ${r.version}) to ${r.meters} meter(s) in ` +
          `${r.stages.length} stage(s): ${r.stages.map(stageLabel).join(", ")}`,
      )
      print(progressLine(r))
      print(`follow it: citymeter rollout watch ${r.id}`)
    })
  create.on("option:canary", (v: string) => given.push({ kind: "canary", value: v }))
  create.on("option:district", (v: string) => given.push({ kind: "district", value: v }))
  create.on("option:all", () => given.push({ kind: "all" }))

  withBridge(root.command("list"), "read")
    .description("the rollouts, newest first: state, stage, meters ended and per state")
    .option("-n, --limit <n>", "at most this many, 1..500", "50")
    .action(async (o) => {
      const limit = intIn("--limit", o.limit, 1, 500)
      for (const l of rolloutTable((await target(o).list(limit)).rollouts)) print(l)
    })

  withBridge(root.command("show"), "read")
    .description("a rollout's progress: stage, meters per state, each meter's state and % written, why any failed")
    .argument("<id>", "the rollout's id")
    .option("--state <state>", "only the meters in this state (pending, transferring, failed, …)")
    .action(async (id: string, o) => {
      await show(target(o), rolloutId(id), print, o.state)
    })

  withBridge(root.command("watch"), "read")
    .description(
      `print a rollout's progress every ${WATCH_MS / 1000} s until it is done (exit 0), halted or cancelled (exit 1)`,
    )
    .argument("<id>", "the rollout's id")
    .action(async (id: string, o) => {
      const code = await watchRollout(target(o), rolloutId(id), print)
      if (code) process.exitCode = code
    })

  const help = {
    pause: "start no more meters (updates in hand finish)",
    resume: "go on with a paused or halted rollout from its stage",
    cancel: "end a rollout: its pending meters are skipped (updates in hand finish)",
  }
  for (const action of ["pause", "resume", "cancel"] as const)
    withBridge(root.command(action), "ops")
      .description(help[action])
      .argument("<id>", "the rollout's id")
      .action(async (id: string, o) => {
        const r = await target(o).act(rolloutId(id), action)
        print(`rollout ${r.id} ${r.state}`)
        print(progressLine(r))
      })
  return root
}
