// OGC SensorThings API 1.1 (OGC 18-088), read-only: Sensing Core (conformance class A.1) and the
// Filtering Extension (A.2) over the data tier, for open-data portals and city platforms
// (FROST-Server clients, ...). The entity sets and how they map onto meters and readings:
// bridge/src/sta/entities.ts; $filter/$orderby to SQL: sta/filter.ts; query options:
// sta/options.ts; cost limits: sta/budget.ts; paths and paging: sta/query.ts. Entity ids are
// strings (a meter id; "<meter>:<channel>" for a Datastream; "<meter>:<channel>:<boot>:<seq>:<idx>"
// for an Observation). Ids from the URL are parsed and bound as parameters, never used as object
// keys or SQL text.
import type { FastifyInstance } from "fastify"
import { BRIDGE_DEFAULTS } from "../defaults.js"
import { ERROR_RESPONSES } from "../errors.js"
import { BASE_PATH } from "../sta/entities.js"
import { SET_NAMES } from "../sta/entity-set.js"
import { MAX_TOP } from "../sta/options.js"
import { StaQuery } from "../sta/query.js"
import { strictQuery, type RouteContext } from "./shared.js"

const BASE = BASE_PATH

/** The conformance classes this service implements (SensorThings 1.1 serverSettings). */
export const CONFORMANCE = [
  "http://www.opengis.net/spec/iot_sensing/1.1/req/datamodel",
  "http://www.opengis.net/spec/iot_sensing/1.1/req/resource-path/resource-path-to-entities",
  "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data",
]

const text = (description: string) => ({ type: "string", maxLength: 4000, description }) as const

const QUERY = strictQuery({
  $top: { type: "string", pattern: "^[0-9]{1,9}$", description: `page size, at most ${MAX_TOP} (default 100)` },
  $skip: { type: "string", pattern: "^[0-9]{1,10}$", description: "entities to skip" },
  $count: { type: "string", enum: ["true", "false"], description: "include @iot.count" },
  $filter: text("OData condition, e.g. result gt 10 and phenomenonTime ge 2026-01-01T00:00:00Z"),
  $orderby: text("e.g. phenomenonTime desc"),
  $select: text("properties to return, e.g. result,phenomenonTime"),
  $expand: text("related entities to include, e.g. Datastreams/ObservedProperty or Observations($top=5)"),
  $resultFormat: { type: "string", enum: ["default"] },
})

export async function sensorThingsRoutes(app: FastifyInstance, { store, reads, publicUrl }: RouteContext) {
  const budgets = reads ?? BRIDGE_DEFAULTS.reads
  // links are built on the configured public URL, never on the Host header a client sends
  const origin = () => `${publicUrl()}${BASE}`

  app.get(
    BASE,
    { schema: { tags: ["sensorthings"], summary: "SensorThings service root", response: ERROR_RESPONSES } },
    async () => ({
      value: SET_NAMES.map((name) => ({ name, url: `${origin()}/${name}` })),
      serverSettings: { conformance: CONFORMANCE },
    }),
  )

  app.get<{ Params: { "*": string }; Querystring: Record<string, string> }>(
    `${BASE}/*`,
    {
      schema: {
        tags: ["sensorthings"],
        summary:
          "SensorThings 1.1 (read-only): Things, Locations, HistoricalLocations, Datastreams, Sensors, " +
          "ObservedProperties, Observations, FeaturesOfInterest; navigation, $ref, properties and $value; " +
          "$filter, $orderby, $top, $skip, $count, $select, $expand. An answer holds at most READ_MAX_ENTITIES " +
          "entities (every $expand level together; checked before any work from each level's $top) and " +
          "READ_MAX_BYTES of JSON; past either, 400 CM_ERR_READ_BUDGET says which and how to ask for less",
        querystring: QUERY,
        response: ERROR_RESPONSES,
      },
    },
    async (req, reply) => {
      const pairs = Object.entries(req.query).map(([k, v]) => [k, String(v)] as [string, string])
      const answer = await new StaQuery(store, origin(), budgets).get(req.params["*"], pairs)
      if (answer.text !== undefined) return reply.type("text/plain; charset=utf-8").send(answer.text)
      return answer.json
    },
  )
}
