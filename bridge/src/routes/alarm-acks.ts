// Acknowledging an alarm edge: an operator says they have seen it, with a note. Needs
// the write token; the first acknowledgement is kept with who and when, and GET /alarms shows it.
import type { FastifyInstance } from "fastify"
import { errors, ERROR_RESPONSES } from "../errors.js"
import { meterIdSchema, NOTE_PATTERN, textSchema, type RouteContext } from "./shared.js"

type AckParams = { id: string; boot: string; seq: string }

export async function alarmAckRoutes(app: FastifyInstance, { store, requireScope, live }: RouteContext) {
  app.post<{ Params: AckParams; Body: { by: string; note?: string } }>(
    "/meters/:id/alarms/:boot/:seq/ack",
    {
      onRequest: requireScope.write,
      schema: {
        tags: ["alarms"],
        summary: "Acknowledge an alarm edge (201 when recorded now, 200 with the earlier acknowledgement)",
        description:
          "An alarm edge is (meter, boot, seq) as GET /alarms lists it (bridge alarms: boot 0). `by` names the " +
          "operator; the time is the bridge's. An edge is acknowledged once: a second call returns the first.",
        security: [{ bearer: [] }],
        params: {
          type: "object",
          required: ["id", "boot", "seq"],
          properties: {
            id: meterIdSchema,
            // path parameters are text (the API coerces no types): decimal digits
            boot: { type: "string", pattern: "^[0-9]{1,15}$" },
            seq: { type: "string", pattern: "^[0-9]{1,15}$" },
          },
        },
        body: {
          type: "object",
          additionalProperties: false,
          required: ["by"],
          properties: {
            // someone: text with at least one visible character
            by: { ...textSchema(80, 1), allOf: [{ pattern: "\\S" }] },
            note: { type: "string", maxLength: 1000, pattern: NOTE_PATTERN },
          },
        },
        response: ERROR_RESPONSES,
      },
    },
    async (req, reply) => {
      const key = { meterId: req.params.id, boot: Number(req.params.boot), seq: Number(req.params.seq) }
      const r = await store.ackAlarm(key, { by: req.body.by.trim(), at: new Date(), note: req.body.note ?? "" })
      if (!r) throw errors.CM_ERR_NOT_FOUND(`alarm ${key.meterId}/${key.boot}/${key.seq}`)
      if (r.created) live?.publish([{ kind: "ack", key, ack: r.ack }])
      return reply
        .status(r.created ? 201 : 200)
        .send({ ...key, created: r.created, ack: { ...r.ack, at: r.ack.at.toISOString() } })
    },
  )
}
