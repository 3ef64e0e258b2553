// Meters: status of the fleet and of one meter, and the registry of provisioned meters.
import type { FastifyInstance } from "fastify"
import { ERROR_RESPONSES, errors } from "../errors.js"
import type { MeterRow } from "../store/store.js"
import { knownMeter, meterParam, type RouteContext } from "./shared.js"

export const meterJson = (m: MeterRow) => ({
  meterId: m.meterId,
  online: m.online,
  inactive: m.inactive,
  firstSeen: m.firstSeen.toISOString(),
  lastSeen: m.lastSeen.toISOString(),
  firmware: m.firmware,
  board: m.board,
  boot: m.boot,
  intervalS: m.intervalS,
  batch: m.batch,
})

export async function meterRoutes(app: FastifyInstance, { store, requireToken }: RouteContext) {
  app.get(
    "/meters",
    {
      schema: {
        tags: ["meters"],
        summary: "Every meter with its status (online, inactive, last seen, firmware, boot)",
        response: ERROR_RESPONSES,
      },
    },
    async () => ({ meters: (await store.listMeters()).map(meterJson) }),
  )

  app.get<{ Params: { id: string } }>(
    "/meters/:id",
    { schema: { tags: ["meters"], summary: "One meter's status", params: meterParam, response: ERROR_RESPONSES } },
    async (req) => {
      return meterJson(await knownMeter(store, req.params.id))
    },
  )

  app.put<{ Params: { id: string } }>(
    "/meters/:id",
    {
      onRequest: requireToken,
      schema: {
        tags: ["meters"],
        summary: "Register a provisioned meter (201 when new, 200 when it was registered already)",
        description:
          "Bridges that do not auto-register accept frames only from registered meters. " +
          "`citymeter provision --bridge` calls this. No body.",
        security: [{ bearer: [] }],
        params: meterParam,
        response: ERROR_RESPONSES,
      },
    },
    async (req, reply) => {
      if (req.body !== undefined && req.body !== null) throw errors.CM_ERR_BAD_REQUEST("PUT /meters/:id takes no body")
      const meterId = req.params.id
      const created = await store.registerMeter(meterId, new Date())
      return reply.status(created ? 201 : 200).send({ meterId, created })
    },
  )
}
