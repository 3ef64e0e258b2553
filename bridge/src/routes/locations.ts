// Where meters are: a registry entry's location, set by `citymeter provision --lat …`
// or this route, shown by GET /meters, grouped by GET /districts.
// the route schemas carry OpenAPI `tags`: @fastify/swagger adds them to FastifySchema
import type {} from "@fastify/swagger"
import type { FastifyInstance } from "fastify"
import { errors, ERROR_RESPONSES } from "../errors.js"
import type { MeterLocation } from "../store/store.js"
import { meterParam, textSchema, type RouteContext } from "./shared.js"

/** The body of PUT /meters/:id/location (also what the CLI sends). */
export const LOCATION_SCHEMA = {
  type: "object",
  additionalProperties: false,
  required: ["lat", "lon"],
  properties: {
    lat: { type: "number", minimum: -90, maximum: 90, description: "WGS 84 latitude, degrees" },
    lon: { type: "number", minimum: -180, maximum: 180, description: "WGS 84 longitude, degrees" },
    address: { ...textSchema(200, 1), nullable: true },
    district: { ...textSchema(80, 1), nullable: true },
  },
} as const

type LocationBody = { lat: number; lon: number; address?: string | null; district?: string | null }

export async function locationRoutes(app: FastifyInstance, { store, requireScope, live }: RouteContext) {
  const set = async (meterId: string, location: MeterLocation | null) => {
    if (!(await store.setLocation(meterId, location))) throw errors.CM_ERR_NOT_FOUND(`meter ${meterId}`)
    live?.publish([{ kind: "meter", meter: { meterId, location } }])
    return { meterId, location }
  }

  app.put<{ Params: { id: string }; Body: LocationBody }>(
    "/meters/:id/location",
    {
      onRequest: requireScope.ops,
      schema: {
        tags: ["meters"],
        summary: "Set a registered meter's location (latitude/longitude, address, district)",
        security: [{ bearer: [] }],
        params: meterParam,
        body: LOCATION_SCHEMA,
        response: ERROR_RESPONSES,
      },
    },
    async (req) => {
      const b = req.body
      return set(req.params.id, { lat: b.lat, lon: b.lon, address: b.address ?? null, district: b.district ?? null })
    },
  )

  app.delete<{ Params: { id: string } }>(
    "/meters/:id/location",
    {
      onRequest: requireScope.ops,
      schema: {
        tags: ["meters"],
        summary: "Clear a meter's location",
        security: [{ bearer: [] }],
        params: meterParam,
        response: ERROR_RESPONSES,
      },
    },
    async (req) => set(req.params.id, null),
  )
}
