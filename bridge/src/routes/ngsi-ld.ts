// NGSI-LD read view (ETSI GS CIM 009, the FIWARE context-broker API) of every meter's newest
// reading as Smart Data Models entities (fiware.ts): Query Entities (GET /ngsi-ld/v1/entities) and
// Retrieve Entity (GET /ngsi-ld/v1/entities/{id}), normalized or with options=keyValues.
// With Accept: application/json (or none) the @context travels in a Link header; with
// application/ld+json it is the body's @context. Errors, fastify's own included, are NGSI-LD
// ProblemDetails (type, title, status, detail) that also carry the API's { error: CM_ERR_…,
// message }: the one error handler (error-handler.ts) gives every path under /ngsi-ld/ that form
// (routes/problem.ts).
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify"
import { errors } from "../errors.js"
import {
  MODELS,
  NGSI_LD_CORE_CONTEXT,
  contextLink,
  contextOf,
  entityOf,
  keyValues,
  modelOf,
  parseEntityId,
  type FiwareType,
  type NgsiEntity,
} from "../fiware.js"
import {
  WATER_NETWORK,
  WATER_NETWORK_CONTEXT,
  dmaEntity,
  dmaKeyValues,
  isWaterNetworkType,
  parseDmaEntityId,
  type DmaEntity,
} from "../fiware-dma.js"
import type { DmaRow } from "../store/dma-store.js"
import type { ReadingRow, Store } from "../store/store.js"
import { NGSI_LD_PREFIX, PROBLEM_RESPONSES } from "./problem.js"
import { strictQuery, type RouteContext } from "./shared.js"

export const NGSI_LD_BASE = `${NGSI_LD_PREFIX}v1`

/** Query Entities answers at most this many entities per request (NGSI-LD `limit`). */
export const NGSI_MAX_LIMIT = 1000
export const NGSI_DEFAULT_LIMIT = 20

const JSON_TYPE = "application/json"
const LD_TYPE = "application/ld+json"

/** The representation the Accept header asks for: ld (body @context), json (Link header). */
function negotiate(req: FastifyRequest): "json" | "ld" {
  const accept = req.headers.accept
  if (!accept) return "json"
  const types = accept.split(",").map((t) => t.split(";")[0].trim().toLowerCase())
  for (const t of types) {
    if (t === LD_TYPE) return "ld"
    if (t === JSON_TYPE || t === "*/*" || t === "application/*") return "json"
  }
  throw errors.CM_ERR_NOT_ACCEPTABLE(accept, `${JSON_TYPE}, ${LD_TYPE}`)
}

type Options = { keyValues: boolean }

/** `options` (keyValues, normalized) and `format` (simplified, normalized, NGSI-LD 1.7). */
function parseOptions(q: { options?: string; format?: string }): Options {
  let kv = q.format === "simplified"
  for (const o of (q.options ?? "").split(",").filter(Boolean)) {
    if (o === "keyValues" || o === "simplified") kv = true
    else if (o !== "normalized")
      throw errors.CM_ERR_BAD_QUERY(`options '${o}' is not supported (keyValues, simplified, normalized)`)
  }
  return { keyValues: kv }
}

/** An entity as answered: normalized or keyValues, attributes filtered, @context in the body for ld. */
function render(e: NgsiEntity, o: Options, attrs: string[] | undefined, ld: boolean): Record<string, unknown> {
  let out: Record<string, unknown> = o.keyValues ? keyValues(e) : { ...e }
  if (attrs)
    out = Object.fromEntries(Object.entries(out).filter(([k]) => k === "id" || k === "type" || attrs.includes(k)))
  if (ld) out["@context"] = contextOf(e.type)
  return out
}

const DAY_MS = 86_400_000

/** The DMAs' WaterNetwork entities (fiware-dma.ts), each with the balance of the last whole UTC day. */
async function buildDmaEntities(store: Store, dmas: DmaRow[], all: DmaRow[], now = Date.now()): Promise<DmaEntity[]> {
  if (!dmas.length) return []
  const to = new Date(Math.floor(now / DAY_MS) * DAY_MS)
  const days = await store.dmaBalance({
    dmaIds: dmas.map((d) => d.dmaId),
    bucket: "day",
    from: new Date(to.getTime() - DAY_MS),
    to,
  })
  const day = new Map(days.map((b) => [b.dmaId, b]))
  return dmas.map((d) =>
    dmaEntity(
      d,
      all.filter((c) => c.parentId === d.dmaId).map((c) => c.dmaId),
      day.get(d.dmaId),
    ),
  )
}

/** A DMA's entity as answered, like render() for a meter's. */
function renderDma(e: DmaEntity, o: Options, attrs: string[] | undefined, ld: boolean): Record<string, unknown> {
  let out: Record<string, unknown> = o.keyValues ? dmaKeyValues(e) : { ...e }
  if (attrs)
    out = Object.fromEntries(Object.entries(out).filter(([k]) => k === "id" || k === "type" || attrs.includes(k)))
  if (ld) out["@context"] = [WATER_NETWORK_CONTEXT, NGSI_LD_CORE_CONTEXT]
  return out
}

/** The entity of `type` for a meter's newest reading, with its location and open alarms. */
async function buildEntity(store: Store, type: FiwareType, r: ReadingRow): Promise<NgsiEntity | undefined> {
  const meter = await store.getMeter(r.meterId)
  const openAlarms =
    type === "WaterConsumptionObserved"
      ? (await store.alarms({ meterId: r.meterId, open: true })).map((a) => a.type)
      : undefined
  return entityOf(type, { meterId: r.meterId, meter, reading: r, openAlarms })
}

type ListQs = {
  type?: string
  id?: string
  attrs?: string
  limit?: number
  offset?: number
  count?: boolean
  options?: string
  format?: string
}

const listQuery = strictQuery({
  type: {
    type: "string",
    maxLength: 400,
    description: `Entity types, comma-separated: ${[...MODELS.keys(), WATER_NETWORK].join(", ")} (short name or expanded URI)`,
  },
  id: { type: "string", maxLength: 20000, description: "Entity ids, comma-separated" },
  attrs: { type: "string", maxLength: 2000, description: "Attributes to answer, comma-separated (id and type always)" },
  limit: { type: "integer", minimum: 0, maximum: NGSI_MAX_LIMIT, default: NGSI_DEFAULT_LIMIT },
  offset: { type: "integer", minimum: 0, maximum: 10_000_000, default: 0 },
  count: { type: "boolean", description: "Answer the number of matching entities in the NGSILD-Results-Count header" },
  options: { type: "string", maxLength: 100, description: "keyValues (or simplified) for the simplified form" },
  format: { type: "string", enum: ["simplified", "normalized"] },
})

export async function ngsiLdRoutes(app: FastifyInstance, { store }: RouteContext) {
  const send = (
    reply: FastifyReply,
    ld: boolean,
    type: FiwareType | typeof WATER_NETWORK | undefined,
    body: unknown,
  ) => {
    if (ld) return reply.type(LD_TYPE).send(body)
    if (type === WATER_NETWORK)
      void reply.header(
        "link",
        `<${WATER_NETWORK_CONTEXT}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"`,
      )
    else if (type) void reply.header("link", contextLink(type))
    return reply.type(JSON_TYPE).send(body)
  }

  app.get<{ Querystring: ListQs }>(
    `${NGSI_LD_BASE}/entities`,
    {
      schema: {
        tags: ["fiware"],
        summary:
          "Query Entities (NGSI-LD): every meter's newest reading as WaterConsumptionObserved or ACMeasurement, " +
          "every DMA as a WaterNetwork",
        description:
          "ETSI GS CIM 009 Query Entities over the meters' newest readings. `type` or `id` is required. Normalized " +
          "by default; options=keyValues for the simplified form (what the Smart Data Models' JSON Schemas describe). " +
          "Accept application/json: the @context is in the Link header; application/ld+json: in each entity. " +
          "DMAs are WaterNetwork entities (docs/fiware-dma.md): name, boundary as location, sub-DMAs as " +
          "hasSubNetwork, and the balance of the last whole UTC day as citymeter's attributes (no Smart Data Model " +
          "has a water balance); they follow the meters' entities, in DMA id order. " +
          `Entities in meter id order; limit (default ${NGSI_DEFAULT_LIMIT}, at most ${NGSI_MAX_LIMIT}) and offset page them. ` +
          "Each query walks the meters' newest readings (one row per meter).",
        querystring: listQuery,
        response: PROBLEM_RESPONSES,
      },
    },
    async (req, reply) => {
      const ld = negotiate(req) === "ld"
      const opts = parseOptions(req.query)
      const q = req.query
      const limit = q.limit ?? NGSI_DEFAULT_LIMIT
      const offset = q.offset ?? 0
      if (q.type === undefined && q.id === undefined)
        throw errors.CM_ERR_BAD_QUERY("Query Entities needs type or id (NGSI-LD: at least one of type, id, attrs, q)")
      const types = new Set<FiwareType>()
      let networks = q.type === undefined
      for (const t of (q.type ?? [...MODELS.keys()].join(",")).split(",")) {
        const m = modelOf(t.trim())
        // an unknown type matches no entity (NGSI-LD): answer none rather than an error
        if (m) types.add(m.type)
        else if (isWaterNetworkType(t.trim())) networks = true
      }
      const attrs = q.attrs?.split(",").map((a) => a.trim())
      // candidates in meter id order, then model order; built only for the page answered
      const page: { type: FiwareType; r: ReadingRow }[] = []
      let matched = 0
      const take = (r: ReadingRow) => {
        for (const m of MODELS.values()) {
          if (!types.has(m.type) || !m.applies(r)) continue
          if (matched >= offset && page.length < limit) page.push({ type: m.type, r })
          matched++
        }
      }
      const wantedDmas = new Set<string>()
      if (q.id !== undefined) {
        for (const s of q.id.split(",")) {
          const dmaId = parseDmaEntityId(s.trim())
          if (dmaId) wantedDmas.add(dmaId)
        }
        const ids = q.id.split(",").map((s) => parseEntityId(s.trim()))
        const wanted = new Map<string, Set<FiwareType>>()
        for (const p of ids) if (p) wanted.set(p.meterId, (wanted.get(p.meterId) ?? new Set()).add(p.model.type))
        for (const r of await store.latestOf([...wanted.keys()]))
          for (const m of MODELS.values()) {
            if (!wanted.get(r.meterId)!.has(m.type) || !types.has(m.type) || !m.applies(r)) continue
            if (matched >= offset && page.length < limit) page.push({ type: m.type, r })
            matched++
          }
      } else if (types.size) {
        const STEP = 1000
        for (let after: string | undefined; ;) {
          const rows = await store.latest({ after, limit: STEP })
          for (const r of rows) take(r)
          if (rows.length < STEP || (!q.count && page.length >= limit)) break
          after = rows[rows.length - 1].meterId
        }
      }
      // the DMAs' WaterNetwork entities follow the meters' (DMA id order)
      const dmaPage: DmaRow[] = []
      let allDmas: DmaRow[] = []
      if (networks && (q.id === undefined || wantedDmas.size)) {
        allDmas = await store.listDmas()
        for (const d of allDmas) {
          if (q.id !== undefined && !wantedDmas.has(d.dmaId)) continue
          if (matched >= offset && page.length + dmaPage.length < limit) dmaPage.push(d)
          matched++
        }
      }
      if (q.count) void reply.header("NGSILD-Results-Count", String(matched))
      const out: Record<string, unknown>[] = []
      for (const { type, r } of page) {
        const e = await buildEntity(store, type, r)
        if (e) out.push(render(e, opts, attrs, ld))
      }
      for (const e of await buildDmaEntities(store, dmaPage, allDmas)) out.push(renderDma(e, opts, attrs, ld))
      const only = networks ? (types.size ? undefined : WATER_NETWORK) : types.size === 1 ? [...types][0] : undefined
      return send(reply, ld, only, out)
    },
  )

  app.get<{ Params: { id: string }; Querystring: Pick<ListQs, "attrs" | "options" | "format"> }>(
    `${NGSI_LD_BASE}/entities/:id`,
    {
      schema: {
        tags: ["fiware"],
        summary: "Retrieve Entity (NGSI-LD): one meter's newest reading as its Smart Data Models entity",
        description:
          "Entity ids: urn:ngsi-ld:WaterConsumptionObserved:<meter id>, urn:ngsi-ld:ACMeasurement:<meter id> and " +
          "urn:ngsi-ld:WaterNetwork:<DMA id> (docs/fiware-dma.md).",
        params: { type: "object", properties: { id: { type: "string", maxLength: 200 } }, required: ["id"] },
        querystring: strictQuery({
          attrs: listQuery.properties.attrs,
          options: listQuery.properties.options,
          format: listQuery.properties.format,
        }),
        response: PROBLEM_RESPONSES,
      },
    },
    async (req, reply) => {
      const ld = negotiate(req) === "ld"
      const opts = parseOptions(req.query)
      // NGSI-LD: an id that is not a URI is BadRequestData; a URI naming no entity, ResourceNotFound
      if (!/^[A-Za-z][A-Za-z0-9+.-]*:/.test(req.params.id))
        throw errors.CM_ERR_BAD_REQUEST(`entity id '${req.params.id}' is not a URI`)
      const attrs = req.query.attrs?.split(",").map((a) => a.trim())
      const dmaId = parseDmaEntityId(req.params.id)
      if (dmaId) {
        const all = await store.listDmas()
        const d = all.find((x) => x.dmaId === dmaId)
        if (!d) throw errors.CM_ERR_NOT_FOUND(`entity ${req.params.id}`)
        const [e] = await buildDmaEntities(store, [d], all)
        return send(reply, ld, WATER_NETWORK, renderDma(e, opts, attrs, ld))
      }
      const parsed = parseEntityId(req.params.id)
      if (!parsed) throw errors.CM_ERR_NOT_FOUND(`entity ${req.params.id}`)
      const [r] = await store.latestOf([parsed.meterId])
      const e = r && (await buildEntity(store, parsed.model.type, r))
      if (!e) throw errors.CM_ERR_NOT_FOUND(`entity ${req.params.id}`)
      return send(reply, ld, e.type, render(e, opts, attrs, ld))
    },
  )
}
