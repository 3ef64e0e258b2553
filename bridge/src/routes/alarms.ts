// Alarms: the fleet's alarm edges and one meter's, with open=true for those still raised.
import type { FastifyInstance } from "fastify"
import { ERROR_RESPONSES } from "../errors.js"
import type { AlarmRow } from "../store/store.js"
import { meterIdSchema, meterParam, strictQuery, type RouteContext } from "./shared.js"
import { parseRange, rangeProps } from "./time.js"

const alarmJson = (a: AlarmRow) => ({ ...a, ts: a.ts.toISOString() })

const alarmProps = {
  ...rangeProps,
  open: { type: "boolean", description: "only alarms raised without a later clear of the same type" },
  limit: { type: "integer", minimum: 1, maximum: 100000 },
} as const

type AlarmQs = { open?: boolean; from?: string; to?: string; limit?: number }

export async function alarmRoutes(app: FastifyInstance, { store }: RouteContext) {
  const alarmsFor = async (meterId: string | undefined, q: AlarmQs) => {
    const { from, to } = parseRange(q)
    const rows = await store.alarms({ meterId, open: q.open, from, to, limit: q.limit })
    return rows.map(alarmJson)
  }

  app.get<{ Querystring: AlarmQs & { meter?: string } }>(
    "/alarms",
    {
      schema: {
        tags: ["alarms"],
        summary: "Alarm edges of the fleet (history), or open alarms with open=true",
        querystring: strictQuery({ ...alarmProps, meter: meterIdSchema }),
        response: ERROR_RESPONSES,
      },
    },
    async (req) => ({ alarms: await alarmsFor(req.query.meter, req.query) }),
  )

  app.get<{ Params: { id: string }; Querystring: AlarmQs }>(
    "/meters/:id/alarms",
    {
      schema: {
        tags: ["alarms"],
        summary: "One meter's alarms",
        params: meterParam,
        querystring: strictQuery(alarmProps),
        response: ERROR_RESPONSES,
      },
    },
    async (req) => ({ meterId: req.params.id, alarms: await alarmsFor(req.params.id, req.query) }),
  )
}
