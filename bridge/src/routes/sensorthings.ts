// A read-only OGC SensorThings API (v1.1) view of the data tier for open-data portals: a meter is a
// Thing, each measured channel of a meter a Datastream, each interval reading an Observation.
// Supported: Things, Things('id'), Things('id')/Datastreams, Datastreams, Datastreams('id'),
// Datastreams('id')/Observations with $top and $skip. Ids are strings: a meter id, and
// "<meter>:<channel>" for a Datastream (meter ids never contain ':').
// Entity ids come from the URL: they are looked up (Map, isMeterId), never used as object keys, so
// Datastreams('m:constructor') is a 404, not Object.prototype.
import type { FastifyInstance, FastifyRequest } from "fastify"
import { ERROR_RESPONSES, errors } from "../errors.js"
import type { MeterRow, ReadingRow } from "../store/store.js"
import { isMeterId } from "../topics.js"
import { strictQuery, type RouteContext } from "./shared.js"

const BASE = "/sta/v1.1"
const OM_MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
const UCUM = "http://unitsofmeasure.org/ucum.html#para-30"

interface Channel {
  key: keyof ReadingRow
  name: string
  unit: { name: string; symbol: string; definition: string }
  property: string
}

/** The channels a meter's Datastreams expose, one per measured column of a reading. */
export const CHANNELS: ReadonlyMap<string, Channel> = new Map(
  Object.entries({
    water: {
      key: "volumeMl",
      name: "water volume",
      unit: { name: "millilitre", symbol: "mL", definition: UCUM },
      property: "Water volume per interval",
    },
    energy: {
      key: "energyWh",
      name: "active energy",
      unit: { name: "watt hour", symbol: "W.h", definition: UCUM },
      property: "Imported active energy per interval",
    },
    power: {
      key: "powerW",
      name: "active power",
      unit: { name: "watt", symbol: "W", definition: UCUM },
      property: "Mean active power per interval",
    },
    voltage: {
      key: "voltageDv",
      name: "voltage",
      unit: { name: "decivolt", symbol: "dV", definition: UCUM },
      property: "Mean RMS voltage per interval",
    },
    pressure: {
      key: "pressureAvgPa",
      name: "water pressure",
      unit: { name: "pascal", symbol: "Pa", definition: UCUM },
      property: "Mean water pressure per interval",
    },
  }),
)

const PATH = /^(Things|Datastreams)(?:\('([^']+)'\))?(?:\/(Datastreams|Observations))?$/

export async function sensorThingsRoutes(app: FastifyInstance, { store }: RouteContext) {
  const origin = (req: FastifyRequest) => `${req.protocol}://${req.host}${BASE}`

  const thing = (base: string, m: MeterRow) => ({
    "@iot.id": m.meterId,
    "@iot.selfLink": `${base}/Things('${m.meterId}')`,
    name: m.meterId,
    description: `citymeter smart meter ${m.meterId}`,
    properties: { firmware: m.firmware, board: m.board, boot: m.boot, online: m.online, lastSeen: m.lastSeen },
    "Datastreams@iot.navigationLink": `${base}/Things('${m.meterId}')/Datastreams`,
  })

  const datastream = (base: string, meterId: string, ch: string, c: Channel) => {
    const id = `${meterId}:${ch}`
    return {
      "@iot.id": id,
      "@iot.selfLink": `${base}/Datastreams('${id}')`,
      name: `${meterId} ${c.name}`,
      description: c.property,
      observationType: OM_MEASUREMENT,
      unitOfMeasurement: c.unit,
      ObservedProperty: { name: c.name, definition: c.property, description: c.property },
      "Thing@iot.navigationLink": `${base}/Things('${meterId}')`,
      "Observations@iot.navigationLink": `${base}/Datastreams('${id}')/Observations`,
    }
  }

  const observation = (base: string, id: string, ch: Channel, r: ReadingRow) => {
    const end = new Date(r.ts.getTime() + r.intervalS * 1000).toISOString()
    const oid = `${id}:${r.boot}:${r.seq}:${r.idx}`
    return {
      "@iot.id": oid,
      "@iot.selfLink": `${base}/Observations('${oid}')`,
      phenomenonTime: `${r.ts.toISOString()}/${end}`,
      resultTime: end,
      result: r[ch.key],
    }
  }

  const notFound = (what: string) => errors.CM_ERR_NOT_FOUND(what)
  const datastreams = (base: string, meterId: string) =>
    [...CHANNELS].map(([ch, c]) => datastream(base, meterId, ch, c))

  app.get(
    BASE,
    { schema: { tags: ["sensorthings"], summary: "SensorThings service root", response: ERROR_RESPONSES } },
    async (req) => ({
      value: ["Things", "Datastreams"].map((name) => ({ name, url: `${origin(req)}/${name}` })),
    }),
  )

  app.get<{ Params: { "*": string }; Querystring: { $top?: number; $skip?: number } }>(
    `${BASE}/*`,
    {
      schema: {
        tags: ["sensorthings"],
        summary: "SensorThings read view: Things, Datastreams, Observations of a Datastream",
        querystring: strictQuery({
          $top: { type: "integer", minimum: 1, maximum: 10000, default: 100 },
          $skip: { type: "integer", minimum: 0, maximum: 1000000, default: 0 },
        }),
        response: ERROR_RESPONSES,
      },
    },
    async (req) => {
      const base = origin(req)
      const m = PATH.exec(req.params["*"])
      if (!m) throw notFound(`SensorThings resource ${req.params["*"]}`)
      const [, set, id, nav] = m
      const top = req.query.$top ?? 100
      const skip = req.query.$skip ?? 0
      const page = <T>(all: T[]) => ({
        "@iot.count": all.length,
        value: all.slice(skip, skip + top),
        ...(skip + top < all.length ? { "@iot.nextLink": `${base}/${m[0]}?$top=${top}&$skip=${skip + top}` } : {}),
      })
      const meterOf = async (meterId: string) => {
        const meter = isMeterId(meterId) ? await store.getMeter(meterId) : undefined
        if (!meter) throw notFound(`Thing ${meterId}`)
        return meter
      }

      if (set === "Things") {
        if (id === undefined) {
          if (nav) throw notFound(`SensorThings resource ${req.params["*"]}`)
          return page((await store.listMeters()).map((x) => thing(base, x)))
        }
        const meter = await meterOf(id)
        if (!nav) return thing(base, meter)
        if (nav !== "Datastreams") throw notFound(`Things('${id}')/${nav}`)
        return page(datastreams(base, meter.meterId))
      }
      // Datastreams
      if (id === undefined) {
        if (nav) throw notFound(`SensorThings resource ${req.params["*"]}`)
        const meters = await store.listMeters()
        return page(meters.flatMap((x) => datastreams(base, x.meterId)))
      }
      const sep = id.lastIndexOf(":")
      const [meterId, ch] = [id.slice(0, sep), id.slice(sep + 1)]
      const channel = sep < 0 ? undefined : CHANNELS.get(ch)
      if (!channel) throw notFound(`Datastream ${id}`)
      await meterOf(meterId)
      if (!nav) return datastream(base, meterId, ch, channel)
      if (nav !== "Observations") throw notFound(`Datastreams('${id}')/${nav}`)
      const rows = await store.readings(meterId, { limit: skip + top + 1 })
      const obs = rows.filter((r) => r[channel.key] !== null).map((r) => observation(base, id, channel, r))
      const value = obs.slice(skip, skip + top)
      return {
        value,
        ...(obs.length > skip + top ? { "@iot.nextLink": `${base}/${m[0]}?$top=${top}&$skip=${skip + top}` } : {}),
      }
    },
  )
}
