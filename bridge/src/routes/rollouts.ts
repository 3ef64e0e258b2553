// Rollouts (issue 23 items 4-6): a registered release sent to the fleet in stages. Creating,
// pausing, resuming and cancelling need the ops scope; reading one (and each meter's state, with
// the bytes written) the read scope. The runner (rollouts/runner.ts) does the work; these routes
// only write what it is to do, so any bridge process can answer them.
import type { FastifyInstance } from "fastify"
import { ERROR_RESPONSES, errors } from "../errors.js"
import { assignStages, stageErrors } from "../rollouts/plan.js"
import {
  METER_STATES,
  type MeterUpdateState,
  type RolloutMeterRow,
  type RolloutRow,
  type RolloutState,
  type StageSpec,
} from "../store/rollouts.js"
import { meterIdSchema, strictQuery, textSchema, type RouteContext } from "./shared.js"

/** Defaults of a rollout's knobs. */
export const ROLLOUT_DEFAULTS = { concurrency: 5, verifyS: 300, windowS: 120 }
const MAX_METERS = 100_000
const HHMM = "^([01][0-9]|2[0-3]):[0-5][0-9]$"
const minutes = (hhmm: string) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3))
const hhmm = (m: number) => `${String(Math.floor(m / 60)).padStart(2, "0")}:${String(m % 60).padStart(2, "0")}`

export const rolloutJson = (r: RolloutRow) => {
  const total = Object.values(r.counts).reduce((a, b) => a + (b ?? 0), 0)
  return {
    id: r.id,
    releaseId: r.releaseId,
    board: r.board,
    version: r.version,
    state: r.state,
    stage: r.stage + 1,
    stages: r.stages,
    concurrency: r.concurrency,
    hours: r.hours && { from: hhmm(r.hours.fromMin), to: hhmm(r.hours.toMin) },
    verifyS: r.verifyS,
    windowS: r.windowS,
    reason: r.reason,
    meters: total,
    counts: Object.fromEntries(METER_STATES.map((s) => [s, r.counts[s] ?? 0])),
    createdAt: r.createdAt.toISOString(),
    updatedAt: r.updatedAt.toISOString(),
  }
}

const meterJson = (m: RolloutMeterRow) => ({
  meterId: m.meterId,
  stage: m.stage + 1,
  state: m.state,
  written: m.written,
  attempts: m.attempts,
  fromRelease: m.fromRelease,
  reason: m.reason,
  startedAt: m.startedAt?.toISOString() ?? null,
  updatedAt: m.updatedAt.toISOString(),
})

const stageSchema = {
  oneOf: [
    {
      type: "object",
      additionalProperties: false,
      required: ["kind", "share"],
      properties: { kind: { const: "canary" }, share: { type: "number", exclusiveMinimum: 0, exclusiveMaximum: 1 } },
    },
    {
      type: "object",
      additionalProperties: false,
      required: ["kind", "district"],
      properties: { kind: { const: "district" }, district: textSchema(120, 1) },
    },
    { type: "object", additionalProperties: false, required: ["kind"], properties: { kind: { const: "all" } } },
  ],
} as const

const rolloutSchema = {
  type: "object",
  properties: {
    id: { type: "integer" },
    releaseId: { type: "integer" },
    board: { type: "string" },
    version: { type: "string" },
    state: { type: "string", enum: ["running", "paused", "cancelled", "halted", "done"] },
    stage: { type: "integer", description: "the stage under way, from 1" },
    stages: { type: "array", items: { type: "object", additionalProperties: true } },
    concurrency: { type: "integer" },
    hours: {
      type: ["object", "null"],
      properties: { from: { type: "string" }, to: { type: "string" } },
      description: "the maintenance window, UTC",
    },
    verifyS: { type: "integer" },
    windowS: { type: "integer" },
    reason: { type: ["string", "null"], description: "why it halted or was cancelled" },
    meters: { type: "integer" },
    counts: { type: "object", additionalProperties: { type: "integer" }, description: "meters per state" },
    createdAt: { type: "string", format: "date-time" },
    updatedAt: { type: "string", format: "date-time" },
  },
} as const

const ridParam = {
  type: "object",
  required: ["rid"],
  properties: { rid: { type: "string", pattern: "^[1-9][0-9]{0,14}$" } },
} as const

interface CreateBody {
  releaseId: number
  stages: StageSpec[]
  concurrency?: number
  verifyS?: number
  windowS?: number
  hours?: { from: string; to: string }
  meters?: string[]
  reason?: string
}

/** The state changes an operator may ask for: from which states, to which. */
const ACTIONS: Record<"pause" | "resume" | "cancel", { from: RolloutState[]; to: RolloutState; done: string }> = {
  pause: { from: ["running"], to: "paused", done: "paused" },
  resume: { from: ["paused", "halted"], to: "running", done: "resumed" },
  cancel: { from: ["running", "paused", "halted"], to: "cancelled", done: "cancelled" },
}

export async function rolloutRoutes(app: FastifyInstance, { store, requireScope, wssk, downlink }: RouteContext) {
  app.post<{ Body: CreateBody }>(
    "/rollouts",
    {
      onRequest: requireScope.ops,
      schema: {
        tags: ["rollouts"],
        summary: "Send a release to the meters of its board, in stages",
        description:
          "Stages: a canary share, districts, then all; meters are taken online only and never with an alarm open. " +
          "Each meter is done when the runtime's hash and its next Birth are the release's; otherwise the release it ran " +
          "before is put back and the rollout halts. CM_ERR_ROLLOUT_CONFLICT: a meter is in another rollout.",
        security: [{ bearer: [] }],
        body: {
          type: "object",
          additionalProperties: false,
          required: ["releaseId", "stages"],
          properties: {
            releaseId: { type: "integer", minimum: 1 },
            stages: { type: "array", minItems: 1, maxItems: 10, items: stageSchema },
            concurrency: { type: "integer", minimum: 1, maximum: 100, default: ROLLOUT_DEFAULTS.concurrency },
            verifyS: { type: "integer", minimum: 10, maximum: 3600, default: ROLLOUT_DEFAULTS.verifyS },
            windowS: { type: "integer", minimum: 10, maximum: 3600, default: ROLLOUT_DEFAULTS.windowS },
            hours: {
              type: "object",
              additionalProperties: false,
              required: ["from", "to"],
              properties: { from: { type: "string", pattern: HHMM }, to: { type: "string", pattern: HHMM } },
              description: "only start meters between these UTC times (to before from wraps past midnight)",
            },
            meters: { type: "array", maxItems: MAX_METERS, uniqueItems: true, items: meterIdSchema },
          },
        },
        response: { 201: rolloutSchema, ...ERROR_RESPONSES },
      },
    },
    async (req, reply) => {
      if (!wssk) throw errors.CM_ERR_NO_WSSK()
      if (!downlink) throw errors.CM_ERR_NO_DOWNLINK()
      const b = req.body
      const release = await store.getRelease(b.releaseId)
      if (!release) throw errors.CM_ERR_NOT_FOUND(`release ${b.releaseId}`)
      const why = stageErrors(b.stages)
      if (b.hours && b.hours.from === b.hours.to) why.push("hours: from and to are the same time")
      if (why.length) throw errors.CM_ERR_BAD_REQUEST(why.join("; "))
      const all = await store.listMeters()
      const wanted = b.meters && new Set(b.meters)
      if (wanted) {
        const known = new Map(all.map((m) => [m.meterId, m]))
        const unknown = b.meters!.filter((id) => !known.has(id))
        if (unknown.length) throw errors.CM_ERR_NOT_FOUND(`meter ${unknown.slice(0, 5).join(", ")}`)
        const other = b.meters!.filter((id) => known.get(id)!.board !== release.board)
        if (other.length)
          throw errors.CM_ERR_WRONG_BOARD(
            other[0],
            known.get(other[0])!.board ?? "(no birth yet)",
            release.id,
            release.board,
          )
      }
      const meters = all
        .filter((m) => m.board === release.board && (!wanted || wanted.has(m.meterId)))
        .map((m) => ({ meterId: m.meterId, district: m.location?.district ?? null }))
      if (!meters.length) throw errors.CM_ERR_BAD_REQUEST(`no meter of board ${release.board} to update`)
      const staged = assignStages(meters, b.stages, `${release.sha256}:${Date.now()}`)
      if (!staged.length) throw errors.CM_ERR_BAD_REQUEST("the stages take none of the meters")
      const out = await store.createRollout(
        {
          releaseId: release.id,
          stages: b.stages,
          concurrency: b.concurrency ?? ROLLOUT_DEFAULTS.concurrency,
          verifyS: b.verifyS ?? ROLLOUT_DEFAULTS.verifyS,
          windowS: b.windowS ?? ROLLOUT_DEFAULTS.windowS,
          hours: b.hours ? { fromMin: minutes(b.hours.from), toMin: minutes(b.hours.to) } : null,
        },
        staged,
        new Date(),
      )
      if (out.kind === "conflict")
        throw errors.CM_ERR_ROLLOUT_CONFLICT(
          out.meters.length,
          out.meters
            .slice(0, 5)
            .map((m) => `${m.meterId} (rollout ${m.rolloutId})`)
            .join(", "),
        )
      req.log.info({ rollout: out.rollout.id, release: release.id, meters: staged.length }, "rollout created")
      return reply.status(201).send(rolloutJson(out.rollout))
    },
  )

  app.get<{ Querystring: { limit?: number } }>(
    "/rollouts",
    {
      onRequest: requireScope.read,
      schema: {
        tags: ["rollouts"],
        summary: "Rollouts, newest first, with their meters per state",
        security: [{ bearer: [] }],
        querystring: strictQuery({ limit: { type: "integer", minimum: 1, maximum: 500, default: 50 } }),
        response: {
          200: { type: "object", properties: { rollouts: { type: "array", items: rolloutSchema } } },
          ...ERROR_RESPONSES,
        },
      },
    },
    async (req) => ({ rollouts: (await store.listRollouts(req.query.limit ?? 50)).map(rolloutJson) }),
  )

  app.get<{ Params: { rid: string } }>(
    "/rollouts/:rid",
    {
      onRequest: requireScope.read,
      schema: {
        tags: ["rollouts"],
        summary: "One rollout",
        security: [{ bearer: [] }],
        params: ridParam,
        response: { 200: rolloutSchema, ...ERROR_RESPONSES },
      },
    },
    async (req) => {
      const r = await store.getRollout(Number(req.params.rid))
      if (!r) throw errors.CM_ERR_NOT_FOUND(`rollout ${req.params.rid}`)
      return rolloutJson(r)
    },
  )

  app.get<{ Params: { rid: string }; Querystring: { state?: MeterUpdateState; after?: string; limit?: number } }>(
    "/rollouts/:rid/meters",
    {
      onRequest: requireScope.read,
      schema: {
        tags: ["rollouts"],
        summary: "Each meter of a rollout: its stage, state, bytes written, attempts and why it ended so",
        description: "Keyset-paged by meter id: pass the last meterId as `after`.",
        security: [{ bearer: [] }],
        params: ridParam,
        querystring: strictQuery({
          state: { type: "string", enum: [...METER_STATES] },
          after: meterIdSchema,
          limit: { type: "integer", minimum: 1, maximum: 1000, default: 200 },
        }),
        response: {
          200: {
            type: "object",
            properties: {
              size: {
                type: "integer",
                description:
                  "bytes of the release; each meter's own `size` is the image it is sent (the rollback's while rolling back)",
              },
              meters: { type: "array", items: { type: "object", additionalProperties: true } },
            },
          },
          ...ERROR_RESPONSES,
        },
      },
    },
    async (req) => {
      const r = await store.getRollout(Number(req.params.rid))
      if (!r) throw errors.CM_ERR_NOT_FOUND(`rollout ${req.params.rid}`)
      const release = await store.getRelease(r.releaseId)
      const q = req.query
      const rows = await store.rolloutMeters(r.id, { state: q.state, after: q.after, limit: q.limit ?? 200 })
      // the image being written: the release's, or while rolling back the one the meter ran before
      const sizes = new Map<number, number>([[r.releaseId, release?.size ?? 0]])
      for (const m of rows)
        if (m.state === "rolling_back" && m.fromRelease !== null && !sizes.has(m.fromRelease))
          sizes.set(m.fromRelease, (await store.getRelease(m.fromRelease))?.size ?? 0)
      const sizeOf = (m: RolloutMeterRow) =>
        sizes.get(m.state === "rolling_back" && m.fromRelease !== null ? m.fromRelease : r.releaseId) ?? 0
      return { size: release?.size ?? 0, meters: rows.map((m) => ({ ...meterJson(m), size: sizeOf(m) })) }
    },
  )

  for (const action of ["pause", "resume", "cancel"] as const)
    app.post<{ Params: { rid: string } }>(
      `/rollouts/:rid/${action}`,
      {
        onRequest: requireScope.ops,
        schema: {
          tags: ["rollouts"],
          summary: `${action[0].toUpperCase()}${action.slice(1)} a rollout`,
          description:
            action === "cancel"
              ? "Its pending meters are skipped; a meter whose update is in hand finishes it (a deploy is not cut short)."
              : action === "pause"
                ? "No meter is started until it is resumed; updates in hand finish."
                : "A paused or halted rollout goes on from its stage.",
          security: [{ bearer: [] }],
          params: ridParam,
          response: { 200: rolloutSchema, ...ERROR_RESPONSES },
        },
      },
      async (req) => {
        const id = Number(req.params.rid)
        const r = await store.getRollout(id)
        if (!r) throw errors.CM_ERR_NOT_FOUND(`rollout ${id}`)
        const a = ACTIONS[action]
        if (
          !(await store.setRolloutState(
            id,
            a.from,
            a.to,
            action === "cancel" ? "cancelled by an operator" : null,
            new Date(),
          ))
        )
          throw errors.CM_ERR_ROLLOUT_STATE(id, r.state, a.done)
        req.log.info({ rollout: id, action }, "rollout " + a.done)
        return rolloutJson((await store.getRollout(id))!)
      },
    )
}
