// The entity sets of a meter itself: the meter is a Thing; its registered location a Location, a
// HistoricalLocation and the FeatureOfInterest of its Observations. Each a view of `meters`.
import { isMeterId } from "../topics.js"
import { CHANNELS } from "./channels.js"
import { iso, lit, num, same, str, text, type EntitySet, type Row } from "./entity-set.js"

const GEOJSON = "application/geo+json"

const METER_COLS = `meter_id, online, first_seen, last_seen, firmware, board, boot, lat, lon, address, district`
const point = (r: Row) => ({ type: "Point", coordinates: [num(r.lon), num(r.lat)] })
const meterKey = (id: string) => (isMeterId(id) ? [id] : undefined)
const byMeter = (a: string) => [`${a}.meter_id`]

export const things: EntitySet = {
  name: "Things",
  from: `SELECT ${METER_COLS}, 'citymeter smart meter ' || meter_id AS description FROM meters`,
  keyCols: ["meter_id"],
  key: meterKey,
  order: byMeter,
  props: {
    id: text("meter_id"),
    name: text("meter_id"),
    description: text("description"),
    "properties/firmware": text("firmware"),
    "properties/board": text("board"),
    "properties/boot": { sql: (a) => `${a}.boot`, type: "number" },
    "properties/online": { sql: (a) => `${a}.online`, type: "bool" },
    "properties/lastSeen": { sql: (a) => `${a}.last_seen`, type: "time" },
    "properties/district": text("district"),
  },
  relations: {
    Datastreams: { target: "Datastreams", plural: true, ...same("meter_id"), max: CHANNELS.length },
    Locations: { target: "Locations", plural: true, ...same("meter_id"), max: 1 },
    HistoricalLocations: { target: "HistoricalLocations", plural: true, ...same("meter_id"), max: 1 },
  },
  id: (r) => String(r.meter_id),
  json: (r) => ({
    name: r.meter_id,
    description: r.description,
    properties: {
      firmware: r.firmware,
      board: r.board,
      boot: num(r.boot),
      online: r.online,
      lastSeen: iso(r.last_seen),
      district: r.district,
    },
  }),
}

const LOCATED = `SELECT meter_id, lat, lon, address, district, first_seen,
  coalesce(address, 'location of ' || meter_id) AS name,
  'registered location of meter ' || meter_id AS description FROM meters WHERE lat IS NOT NULL`

export const locations: EntitySet = {
  name: "Locations",
  from: LOCATED,
  keyCols: ["meter_id"],
  key: meterKey,
  order: byMeter,
  props: {
    id: text("meter_id"),
    name: text("name"),
    description: text("description"),
    encodingType: { sql: () => lit(GEOJSON), type: "text" },
    "properties/district": text("district"),
    "properties/address": text("address"),
  },
  relations: {
    Things: { target: "Things", plural: true, ...same("meter_id"), max: 1 },
    HistoricalLocations: { target: "HistoricalLocations", plural: true, ...same("meter_id"), max: 1 },
  },
  id: (r) => String(r.meter_id),
  json: (r) => ({
    name: r.name,
    description: r.description,
    encodingType: GEOJSON,
    location: point(r),
    properties: { address: r.address, district: r.district },
  }),
}

/**
 * The data tier keeps a meter's current location only: one HistoricalLocation per located meter,
 * at the time the meter was first seen or registered.
 */
export const historicalLocations: EntitySet = {
  name: "HistoricalLocations",
  from: LOCATED,
  keyCols: ["meter_id"],
  key: meterKey,
  order: byMeter,
  props: { id: text("meter_id"), time: { sql: (a) => `${a}.first_seen`, type: "time" } },
  relations: {
    Thing: { target: "Things", plural: false, ...same("meter_id") },
    Locations: { target: "Locations", plural: true, ...same("meter_id"), max: 1 },
  },
  id: (r) => String(r.meter_id),
  json: (r) => ({ time: iso(r.first_seen) }),
}

/** The service point of a meter: where its readings were measured (its location, if registered). */
export const featuresOfInterest: EntitySet = {
  name: "FeaturesOfInterest",
  from: `SELECT meter_id, lat, lon, address, district, 'service point of meter ' || meter_id AS name,
      coalesce('service point at ' || address, 'service point of meter ' || meter_id) AS description FROM meters`,
  keyCols: ["meter_id"],
  key: meterKey,
  order: byMeter,
  props: {
    id: text("meter_id"),
    name: text("name"),
    description: text("description"),
    encodingType: { sql: () => lit(GEOJSON), type: "text" },
    "properties/district": text("district"),
  },
  relations: { Observations: { target: "Observations", plural: true, ...same("meter_id"), meter: "meter_id" } },
  id: (r) => String(r.meter_id),
  json: (r) => ({
    name: r.name,
    description: r.description,
    encodingType: GEOJSON,
    // GeoJSON allows a Feature without a geometry: a meter whose location is not registered
    feature: {
      type: "Feature",
      geometry: r.lat === null || r.lat === undefined ? null : point(r),
      properties: { meterId: r.meter_id, address: str(r.address), district: str(r.district) },
    },
  }),
}
