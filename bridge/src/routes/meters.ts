// Meters: status of the fleet and of one meter, and the registry of provisioned meters.
import type { FastifyInstance } from "fastify"
import { parseKey } from "../seal.js"
import { ERROR_RESPONSES, errors } from "../errors.js"
import type { MeterRow } from "../store/store.js"
import { enumLabel, knownMeter, meterIdSchema, meterParam, strictQuery, type RouteContext } from "./shared.js"

export const meterJson = (m: MeterRow) => ({
  meterId: m.meterId,
  online: m.online,
  inactive: m.inactive,
  /** sealed or open (the key itself never leaves the bridge) */
  sealPolicy: m.seal.policy,
  firstSeen: m.firstSeen.toISOString(),
  lastSeen: m.lastSeen.toISOString(),
  firmware: m.firmware,
  board: m.board,
  boot: m.boot,
  intervalS: m.intervalS,
  batch: m.batch,
  /** what the meter measures and which alarm rules it evaluates (from its birth) */
  channels: m.channels.map(enumLabel),
  alarmRules: m.alarmRules.map(enumLabel),
  /** frames in the meter's queue and frames it dropped, from its last birth */
  queued: m.queued,
  dropped: m.dropped,
  /** flash writes the meter's store refused since its boot (its last birth): frames in its RAM only */
  unstored: m.unstored,
  /** latitude/longitude, address, district (PUT /meters/:id/location), or null */
  location: m.location,
})

export const METERS_PAGE = 10000

export async function meterRoutes(app: FastifyInstance, { store, requireScope }: RouteContext) {
  app.get<{ Querystring: { after?: string; limit?: number } }>(
    "/meters",
    {
      schema: {
        tags: ["meters"],
        summary: "Every meter with its status (online, inactive, last seen, firmware, boot), by meter id",
        description: `Keyset pages: at most \`limit\` meters (default ${METERS_PAGE}); \`next\` is the \`after\` of the next page, null on the last.`,
        querystring: strictQuery({
          after: meterIdSchema,
          limit: { type: "integer", minimum: 1, maximum: 100000, default: METERS_PAGE },
        }),
        response: ERROR_RESPONSES,
      },
    },
    async (req) => {
      const limit = req.query.limit ?? METERS_PAGE
      const after = req.query.after
      // code-unit order in JS (the data tier's collation may differ), so `after` means the same here
      const rest = (await store.listMeters())
        .filter((m) => after === undefined || m.meterId > after)
        .sort((a, b) => (a.meterId < b.meterId ? -1 : a.meterId > b.meterId ? 1 : 0))
      const page = rest.slice(0, limit)
      return { meters: page.map(meterJson), next: rest.length > limit ? page[page.length - 1].meterId : null }
    },
  )

  app.get<{ Params: { id: string } }>(
    "/meters/:id",
    { schema: { tags: ["meters"], summary: "One meter's status", params: meterParam, response: ERROR_RESPONSES } },
    async (req) => {
      return meterJson(await knownMeter(store, req.params.id))
    },
  )

  app.put<{ Params: { id: string }; Body: { policy?: "sealed" | "open"; key?: string } | undefined }>(
    "/meters/:id",
    {
      onRequest: requireScope.ops,
      schema: {
        tags: ["meters"],
        summary: "Register a provisioned meter (201 when new, 200 when it was registered already)",
        description:
          "Bridges that do not auto-register accept frames only from registered meters. " +
          "`citymeter provision --bridge` calls this with the meter's sealing key. Optional body: " +
          "`policy` (`sealed`, the default, or `open` for legacy and demo meters) and `key` (64 hex digits, " +
          "the meter's AES-256 key). A key given for a known meter replaces its key (re-provisioning). " +
          "The key is never returned by any route.",
        security: [{ bearer: [] }],
        params: meterParam,
        body: {
          type: "object",
          nullable: true, // no body: a sealed meter without a key yet
          additionalProperties: false,
          properties: {
            policy: { type: "string", enum: ["sealed", "open"] },
            key: { type: "string", pattern: "^[0-9a-fA-F]{64}$" },
          },
        },
        response: ERROR_RESPONSES,
      },
    },
    async (req, reply) => {
      const meterId = req.params.id
      const body = req.body ?? {}
      const seal = {
        policy: body.policy ?? "sealed",
        ...(body.key ? { key: parseKey(body.key)!, nextKey: null } : {}),
      } as const
      const created = await store.registerMeter(meterId, new Date(), seal)
      if (!created && (body.key || body.policy)) await store.setSeal(meterId, seal)
      return reply.status(created ? 201 : 200).send({ meterId, created, policy: seal.policy })
    },
  )

  app.put<{ Params: { id: string }; Body: { key: string | null } }>(
    "/meters/:id/link-key",
    {
      onRequest: requireScope.ops,
      schema: {
        tags: ["meters"],
        summary: "Set or clear a registered meter's WSSK link key (the runtime's own cloud link, for updates)",
        description:
          "`citymeter provision --wssk-url` calls this with the key it puts in the meter's connection string. " +
          "Body: `key`, 64 hex digits (the 32-byte key), or null to clear it (the meter's links are then refused). " +
          "The key is never returned by any route.",
        security: [{ bearer: [] }],
        params: meterParam,
        body: {
          type: "object",
          additionalProperties: false,
          required: ["key"],
          properties: { key: { type: "string", pattern: "^[0-9a-fA-F]{64}$", nullable: true } },
        },
        response: ERROR_RESPONSES,
      },
    },
    async (req) => {
      const key = req.body.key === null ? null : parseKey(req.body.key)!
      if (!(await store.setLinkKey(req.params.id, key))) throw errors.CM_ERR_NOT_FOUND(`meter ${req.params.id}`)
      return { meterId: req.params.id, linkKey: key !== null }
    },
  )
}
