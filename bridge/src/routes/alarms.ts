// Alarms: the fleet's alarm edges and one meter's, with open=true for those still raised; keyset
// pages like every list route (routes/paging.ts).
import type { FastifyInstance } from "fastify"
import { ERROR_RESPONSES } from "../errors.js"
import type { AlarmRow } from "../store/store.js"
import { afterParam, keysetPage } from "./paging.js"
import { enumLabel, meterIdSchema, meterParam, strictQuery, type RouteContext } from "./shared.js"
import { parseRange, rangeProps } from "./time.js"

/**
 * The unit of each alarm's `value` (firmware/alarms.ts sets it; the bridge's own alarms last).
 * Types are the proto AlarmType names without their ALARM_TYPE_ prefix, as the README lists them.
 */
export const ALARM_VALUE_UNITS: Record<string, string> = {
  LEAK: "s (seconds of continuous flow)",
  BURST: "mL/min (the interval's mean flow)",
  BACKFLOW: "mL (the interval's reverse volume)",
  NO_FLOW: "s (seconds without flow)",
  TAMPER: "1 open, 0 closed",
  MAGNETIC_FIELD: "1 field present, 0 gone",
  PRESSURE_HIGH: "Pa (the interval's highest pressure)",
  PRESSURE_LOW: "Pa (the interval's lowest pressure)",
  SUPPLY_LOSS: "dV (the interval's voltage, 0.1 V)",
  UNDERVOLTAGE: "dV (the interval's voltage, 0.1 V)",
  INACTIVE: "s (seconds since the meter's last frame)",
  FRAME_CONFLICT: "seq (the conflicting frame's sequence number)",
  NIGHT_FLOW_RISE: "mL/h (the DMA's minimum night input; meterId dma:<id>)",
  CUSTOMER_NIGHT_FLOW: "mL/h (the customer meter's lowest night hour)",
}

export const ALARMS_PAGE = 10000

export const alarmJson = ({ ack, ...a }: AlarmRow) => {
  const type = enumLabel(a.type)
  return {
    ...a,
    type,
    unit: ALARM_VALUE_UNITS[type] ?? null,
    ts: a.ts.toISOString(),
    ...(ack ? { ack: { ...ack, at: ack.at.toISOString() } } : {}),
  }
}

const alarmProps = {
  ...rangeProps,
  open: { type: "boolean", description: "only alarms raised without a later clear of the same type" },
  limit: { type: "integer", minimum: 1, maximum: 100000, default: ALARMS_PAGE },
  after: afterParam,
} as const

const description =
  "Alarm edges in time order, in keyset pages: at most `limit` (default " +
  `${ALARMS_PAGE}); \`next\` is the \`after\` of the next page, null on the last. Each edge has \`type\` ` +
  `(${Object.keys(ALARM_VALUE_UNITS).join(", ")}), \`active\` (raised or cleared), and \`value\` in \`unit\`: ` +
  Object.entries(ALARM_VALUE_UNITS)
    .map(([t, u]) => `${t} ${u}`)
    .join("; ")

type AlarmQs = { open?: boolean; from?: string; to?: string; limit?: number; after?: string }

export async function alarmRoutes(app: FastifyInstance, { store }: RouteContext) {
  const alarmsFor = async (meterId: string | undefined, q: AlarmQs) => {
    const range = parseRange(q)
    const { rows, next } = await keysetPage({
      fetch: (from, limit) => store.alarms({ meterId, open: q.open, from, to: range.to, limit }),
      key: (a) => [a.ts.getTime(), a.meterId, a.boot, a.seq, a.type],
      from: range.from,
      after: q.after,
      limit: q.limit ?? ALARMS_PAGE,
    })
    return { alarms: rows.map(alarmJson), next }
  }

  app.get<{ Querystring: AlarmQs & { meter?: string } }>(
    "/alarms",
    {
      schema: {
        tags: ["alarms"],
        summary: "Alarm edges of the fleet (history), or open alarms with open=true",
        description,
        querystring: strictQuery({ ...alarmProps, meter: meterIdSchema }),
        response: ERROR_RESPONSES,
      },
    },
    async (req) => alarmsFor(req.query.meter, req.query),
  )

  app.get<{ Params: { id: string }; Querystring: AlarmQs }>(
    "/meters/:id/alarms",
    {
      schema: {
        tags: ["alarms"],
        summary: "One meter's alarms",
        description,
        params: meterParam,
        querystring: strictQuery(alarmProps),
        response: ERROR_RESPONSES,
      },
    },
    async (req) => ({ meterId: req.params.id, ...(await alarmsFor(req.params.id, req.query)) }),
  )
}
