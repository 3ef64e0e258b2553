// The eight entity sets of OGC SensorThings API 1.1 (OGC 18-088) Sensing Core, each a read-only SQL
// view of the data tier: a fixed subquery over meters and readings whose text comes from this file
// only (request values are always parameters, see sql.ts). A meter is a Thing; its registered
// location a Location, a HistoricalLocation and the FeatureOfInterest of its Observations; each
// channel it measures a Datastream; the instrument kind a Sensor; the phenomenon an
// ObservedProperty (electricity with its OBIS code, IEC 62056-6-1); each interval reading of a
// channel an Observation. Units are UCUM codes.
import { OBIS } from "../store/columns.js"
import { isMeterId } from "../topics.js"

export const BASE_PATH = "/sta/v1.1"
const OM_MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
const UCUM = "http://unitsofmeasure.org/ucum.html"
const GEOJSON = "application/geo+json"

/** A SQL string literal of one of this file's constants (never of request input). */
const lit = (s: string) => `'${s.replace(/'/g, "''")}'`

export type PropType = "text" | "number" | "time" | "bool"

/** A filterable, orderable property: its SQL expression over the set's alias, and its type. */
export interface Prop {
  sql: (a: string) => string
  type: PropType
}

/** The SQL of a column of the source entity: `alias.col` in a filter, a parameter for a fetched row. */
export type Ref = (col: string) => string

export interface Relation {
  target: SetName
  plural: boolean
  /** SQL true for the target rows (alias t) related to the source entity. */
  on: (t: string, s: Ref) => string
  /** Set when `on` is this one column equal on both sides (same()). */
  column?: string
  /** The most target rows one source entity can have (a plural relation; unset: unbounded), for $expand's cost. */
  max?: number
}

export type Row = Record<string, unknown>

export interface EntitySet {
  name: SetName
  /** SELECT ... of the view's columns (a subquery; simple enough for the planner to flatten). */
  from: string
  /** The same rows and columns in a form faster to count, when there is one (unordered). */
  countFrom?: string
  /** The columns that identify a row, and an entity id's values for them (undefined: no such id). */
  keyCols: string[]
  key: (id: string) => unknown[] | undefined
  /** Stable order: the tie-breakers appended to every $orderby, and the default order. */
  order: (a: string) => string[]
  props: Record<string, Prop>
  relations: Record<string, Relation>
  id: (r: Row) => string
  /** The entity's properties (without control information and navigation links). */
  json: (r: Row) => Record<string, unknown>
}

export const SET_NAMES = [
  "Things",
  "Locations",
  "HistoricalLocations",
  "Datastreams",
  "Sensors",
  "ObservedProperties",
  "Observations",
  "FeaturesOfInterest",
] as const
export type SetName = (typeof SET_NAMES)[number]

const num = (v: unknown) => (v === null || v === undefined ? null : Number(v))
const iso = (v: unknown) => (v === null || v === undefined ? null : new Date(v as Date).toISOString())
const str = (v: unknown) => (v === null || v === undefined ? null : String(v))

interface Channel {
  /** The Datastream's channel key (the part after ':' of its id). */
  ch: string
  /** proto Channel the meter's Birth lists when it measures this (meters.channels). */
  proto: string
  label: string
  description: string
  /** The reading column and how its value becomes the result (in the unit below). */
  result: string
  unit: { name: string; symbol: string }
  sensor: string
  observedProperty: string
}

/**
 * The Datastreams of a meter. Totals are the meter's registers; the other channels are per
 * interval (mean power, voltage and pressure over the interval, volume and energy in it).
 */
export const CHANNELS: readonly Channel[] = [
  {
    ch: "water",
    proto: "CHANNEL_WATER",
    label: "water volume",
    description: "Water volume per interval",
    result: "r.volume_ml",
    unit: { name: "millilitre", symbol: "mL" },
    sensor: "water-meter",
    observedProperty: "water-volume",
  },
  {
    ch: "waterTotal",
    proto: "CHANNEL_WATER",
    label: "water register",
    description: "Water volume register (cumulative) at the end of each interval",
    result: "r.water_total_ml",
    unit: { name: "millilitre", symbol: "mL" },
    sensor: "water-meter",
    observedProperty: "water-volume",
  },
  {
    ch: "energy",
    proto: "CHANNEL_ENERGY",
    label: "active energy",
    description: `Imported active energy per interval (the increase of register ${OBIS.activeEnergyImport})`,
    result: "r.energy_wh",
    unit: { name: "watt hour", symbol: "W.h" },
    sensor: "electricity-meter",
    observedProperty: "active-energy-import",
  },
  {
    ch: "energyTotal",
    proto: "CHANNEL_ENERGY",
    label: "active energy register",
    description: `Imported active energy register ${OBIS.activeEnergyImport} at the end of each interval`,
    result: "r.energy_total_wh",
    unit: { name: "watt hour", symbol: "W.h" },
    sensor: "electricity-meter",
    observedProperty: "active-energy-import",
  },
  {
    ch: "power",
    proto: "CHANNEL_POWER",
    label: "active power",
    description: "Mean active power per interval",
    result: "r.power_w",
    unit: { name: "watt", symbol: "W" },
    sensor: "electricity-meter",
    observedProperty: "active-power",
  },
  {
    ch: "voltage",
    proto: "CHANNEL_VOLTAGE",
    label: "voltage",
    description: "Mean RMS voltage L1 per interval",
    // stored in decivolts
    result: "(r.voltage_dv / 10.0)",
    unit: { name: "volt", symbol: "V" },
    sensor: "electricity-meter",
    observedProperty: "voltage-l1",
  },
  {
    ch: "pressure",
    proto: "CHANNEL_PRESSURE",
    label: "water pressure",
    description: "Mean water pressure per interval",
    result: "r.pressure_avg_pa",
    unit: { name: "pascal", symbol: "Pa" },
    sensor: "pressure-sensor",
    observedProperty: "water-pressure",
  },
]
const CHANNEL_BY_KEY = new Map(CHANNELS.map((c) => [c.ch, c]))

const SENSORS = [
  {
    id: "water-meter",
    name: "water meter register",
    description: "Pulse or reed output of a water meter counted by the citymeter board (forward and reverse volume)",
  },
  {
    id: "electricity-meter",
    name: "electricity metering",
    description:
      "S0 pulse output of an electricity meter, or an ADE7953 metering IC (active energy, power and RMS voltage)",
  },
  {
    id: "pressure-sensor",
    name: "water pressure transducer",
    description: "0.5-4.5 V ratiometric pressure transducer on the board's ADC",
  },
].map((s) => ({ ...s, encodingType: "text/plain", metadata: s.description }))

/** OBIS codes (IEC 62056-6-1) for electricity; water quantities have no OBIS code here. */
export const OBSERVED_PROPERTIES = [
  {
    id: "water-volume",
    name: "Water volume",
    definition: "https://en.wikipedia.org/wiki/Water_meter",
    description: "Volume of drinking water that flowed through the meter",
    obis: null,
  },
  {
    id: "active-energy-import",
    name: "Imported active energy",
    definition: `urn:obis:${OBIS.activeEnergyImport}`,
    description: `Active energy imported from the grid (OBIS ${OBIS.activeEnergyImport}, A+ total)`,
    obis: OBIS.activeEnergyImport,
  },
  {
    id: "active-power",
    name: "Active power",
    definition: `urn:obis:${OBIS.activePower}`,
    description: `Active power (OBIS ${OBIS.activePower}), the interval's signed mean (negative: export)`,
    obis: OBIS.activePower,
  },
  {
    id: "voltage-l1",
    name: "Voltage L1",
    definition: `urn:obis:${OBIS.voltageL1}`,
    description: `RMS voltage of phase L1 (OBIS ${OBIS.voltageL1}), averaged over the interval`,
    obis: OBIS.voltageL1,
  },
  {
    id: "water-pressure",
    name: "Water pressure",
    definition: "https://en.wikipedia.org/wiki/Pressure",
    description: "Gauge pressure of the water main at the meter",
    obis: null,
  },
]

const values = (rows: (string | null)[][], cols: string[]) =>
  `(VALUES ${rows.map((r) => `(${r.map((v) => (v === null ? "NULL::text" : lit(v))).join(", ")})`).join(", ")}) AS v(${cols.join(", ")})`

const text = (col: string): Prop => ({ sql: (a) => `${a}.${col}`, type: "text" })
/** A relation by one column equal on both sides: `...same("meter_id")`. */
const same = (column: string) => ({ on: (t: string, s: Ref) => `${t}.${column} = ${s(column)}`, column })

const METER_COLS = `meter_id, online, first_seen, last_seen, firmware, board, boot, lat, lon, address, district`
const point = (r: Row) => ({ type: "Point", coordinates: [num(r.lon), num(r.lat)] })
const meterKey = (id: string) => (isMeterId(id) ? [id] : undefined)
const byMeter = (a: string) => [`${a}.meter_id`]

const things: EntitySet = {
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

const locations: EntitySet = {
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
const historicalLocations: EntitySet = {
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

const CHANNEL_VALUES = values(
  CHANNELS.map((c) => [
    c.ch,
    c.proto,
    c.label,
    c.description,
    c.unit.name,
    c.unit.symbol,
    c.sensor,
    c.observedProperty,
  ]),
  ["ch", "proto", "label", "description", "unit_name", "unit_symbol", "sensor_id", "op_id"],
)

const datastreams: EntitySet = {
  name: "Datastreams",
  // a meter whose Birth listed no channels (older firmware) shows every channel
  from: `SELECT m.meter_id, v.ch, m.meter_id || ':' || v.ch AS id, m.meter_id || ' ' || v.label AS name,
      v.description, v.unit_name, v.unit_symbol, v.sensor_id, v.op_id
    FROM meters m CROSS JOIN ${CHANNEL_VALUES}
    WHERE m.channels IS NULL OR cardinality(m.channels) = 0 OR v.proto = ANY (m.channels)`,
  keyCols: ["meter_id", "ch"],
  key: (id) => {
    const sep = id.lastIndexOf(":")
    const meterId = id.slice(0, sep)
    const ch = id.slice(sep + 1)
    return sep > 0 && isMeterId(meterId) && CHANNEL_BY_KEY.has(ch) ? [meterId, ch] : undefined
  },
  order: (a) => [`${a}.meter_id`, `${a}.ch`],
  props: {
    id: text("id"),
    name: text("name"),
    description: text("description"),
    observationType: { sql: () => lit(OM_MEASUREMENT), type: "text" },
    "unitOfMeasurement/name": text("unit_name"),
    "unitOfMeasurement/symbol": text("unit_symbol"),
    "unitOfMeasurement/definition": { sql: () => lit(UCUM), type: "text" },
  },
  relations: {
    Thing: { target: "Things", plural: false, ...same("meter_id") },
    Sensor: { target: "Sensors", plural: false, on: (t, s) => `${t}.id = ${s("sensor_id")}` },
    ObservedProperty: { target: "ObservedProperties", plural: false, on: (t, s) => `${t}.id = ${s("op_id")}` },
    Observations: {
      target: "Observations",
      plural: true,
      on: (t, s) => `${t}.meter_id = ${s("meter_id")} AND ${t}.ch = ${s("ch")}`,
    },
  },
  id: (r) => String(r.id),
  json: (r) => ({
    name: r.name,
    description: r.description,
    observationType: OM_MEASUREMENT,
    unitOfMeasurement: { name: r.unit_name, symbol: r.unit_symbol, definition: UCUM },
  }),
}

const sensors: EntitySet = {
  name: "Sensors",
  from: `SELECT * FROM ${values(
    SENSORS.map((s) => [s.id, s.name, s.description, s.encodingType, s.metadata]),
    ["id", "name", "description", "encoding_type", "metadata"],
  )}`,
  keyCols: ["id"],
  key: (id) => (SENSORS.some((s) => s.id === id) ? [id] : undefined),
  order: (a) => [`${a}.id`],
  props: {
    id: text("id"),
    name: text("name"),
    description: text("description"),
    encodingType: text("encoding_type"),
    metadata: text("metadata"),
  },
  relations: { Datastreams: { target: "Datastreams", plural: true, on: (t, s) => `${t}.sensor_id = ${s("id")}` } },
  id: (r) => String(r.id),
  json: (r) => ({ name: r.name, description: r.description, encodingType: r.encoding_type, metadata: r.metadata }),
}

const observedProperties: EntitySet = {
  name: "ObservedProperties",
  from: `SELECT * FROM ${values(
    OBSERVED_PROPERTIES.map((p) => [p.id, p.name, p.definition, p.description, p.obis]),
    ["id", "name", "definition", "description", "obis"],
  )}`,
  keyCols: ["id"],
  key: (id) => (OBSERVED_PROPERTIES.some((p) => p.id === id) ? [id] : undefined),
  order: (a) => [`${a}.id`],
  props: {
    id: text("id"),
    name: text("name"),
    definition: text("definition"),
    description: text("description"),
    "properties/obis": text("obis"),
  },
  relations: { Datastreams: { target: "Datastreams", plural: true, on: (t, s) => `${t}.op_id = ${s("id")}` } },
  id: (r) => String(r.id),
  json: (r) => ({
    name: r.name,
    definition: r.definition,
    description: r.description,
    properties: {
      ...(r.obis ? { obis: r.obis, obisStandard: "IEC 62056-6-1" } : {}),
      unitOfMeasurement: CHANNELS.find((c) => c.observedProperty === r.id)?.unit.symbol,
    },
  }),
}

/** Each reading as one row per channel: (channel, value), the columns read directly. */
const PER_CHANNEL = `(VALUES ${CHANNELS.map((c) => `(${lit(c.ch)}, (${c.result})::float8)`).join(", ")}) AS v(ch, result)`
const OBS_KEY = ["meter_id", "ch", "boot", "seq", "idx"]

/**
 * Every non-null channel value of every reading. Scoped by meter (a Datastream, a Thing, a
 * FeatureOfInterest) the planner reads the readings_meter_ts index; phenomenonTime is the
 * interval's start (ts) in $filter and $orderby, so time ranges use it too.
 */
const observations: EntitySet = {
  name: "Observations",
  from: `SELECT r.meter_id, v.ch, r.ts, r.interval_s, r.boot, r.seq, r.idx,
      r.time_synced, r.backfill, r.ts_estimated, r.after_reboot, v.result
    FROM readings r CROSS JOIN LATERAL ${PER_CHANNEL}
    WHERE v.result IS NOT NULL`,
  // counting reads each channel's column in a scan of its own: 2-4x faster than the lateral list
  // over 1M Observations, but its order needs a sort, so pages use `from`
  countFrom: CHANNELS.map(
    (c) =>
      `SELECT r.meter_id, ${lit(c.ch)}::text AS ch, r.ts, r.interval_s, r.boot, r.seq, r.idx, r.time_synced,
        r.backfill, r.ts_estimated, r.after_reboot, (${c.result})::float8 AS result FROM readings r WHERE ${c.result} IS NOT NULL`,
  ).join(" UNION ALL "),
  keyCols: OBS_KEY,
  key: (id) => {
    const p = id.split(":")
    if (p.length !== 5 || !isMeterId(p[0]) || !CHANNEL_BY_KEY.has(p[1])) return undefined
    const n = p.slice(2).map((x) => (/^\d{1,15}$/.test(x) ? Number(x) : NaN))
    return n.some(Number.isNaN) ? undefined : [p[0], p[1], ...n]
  },
  order: (a) => [`${a}.meter_id`, `${a}.ts`, `${a}.boot`, `${a}.seq`, `${a}.idx`, `${a}.ch`],
  props: {
    id: {
      sql: (a) => `${a}.meter_id || ':' || ${a}.ch || ':' || ${a}.boot || ':' || ${a}.seq || ':' || ${a}.idx`,
      type: "text",
    },
    phenomenonTime: { sql: (a) => `${a}.ts`, type: "time" },
    resultTime: { sql: (a) => `(${a}.ts + ${a}.interval_s * interval '1 second')`, type: "time" },
    result: { sql: (a) => `${a}.result`, type: "number" },
    "parameters/timeSynced": { sql: (a) => `${a}.time_synced`, type: "bool" },
    "parameters/backfill": { sql: (a) => `${a}.backfill`, type: "bool" },
    "parameters/tsEstimated": { sql: (a) => `${a}.ts_estimated`, type: "bool" },
    "parameters/afterReboot": { sql: (a) => `${a}.after_reboot`, type: "bool" },
    "parameters/intervalS": { sql: (a) => `${a}.interval_s`, type: "number" },
  },
  relations: {
    Datastream: {
      target: "Datastreams",
      plural: false,
      on: (t, s) => `${t}.meter_id = ${s("meter_id")} AND ${t}.ch = ${s("ch")}`,
    },
    FeatureOfInterest: { target: "FeaturesOfInterest", plural: false, ...same("meter_id") },
  },
  id: (r) => `${String(r.meter_id)}:${String(r.ch)}:${num(r.boot)}:${num(r.seq)}:${num(r.idx)}`,
  json: (r) => {
    const start = new Date(r.ts as Date)
    const end = new Date(start.getTime() + Number(r.interval_s) * 1000).toISOString()
    return {
      phenomenonTime: `${start.toISOString()}/${end}`,
      resultTime: end,
      result: num(r.result),
      parameters: {
        intervalS: num(r.interval_s),
        timeSynced: r.time_synced,
        backfill: r.backfill,
        tsEstimated: r.ts_estimated,
        afterReboot: r.after_reboot,
      },
    }
  },
}

/** The service point of a meter: where its readings were measured (its location, if registered). */
const featuresOfInterest: EntitySet = {
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
  relations: { Observations: { target: "Observations", plural: true, ...same("meter_id") } },
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

export const SETS: Record<SetName, EntitySet> = {
  Things: things,
  Locations: locations,
  HistoricalLocations: historicalLocations,
  Datastreams: datastreams,
  Sensors: sensors,
  ObservedProperties: observedProperties,
  Observations: observations,
  FeaturesOfInterest: featuresOfInterest,
}

export const isSetName = (s: string): s is SetName => (SET_NAMES as readonly string[]).includes(s)

/**
 * A relation or property named by the request, or undefined: only the object's own keys, so
 * `constructor` or `__proto__` never reach Object.prototype.
 */
export const own = <T>(o: Record<string, T>, key: string): T | undefined => (Object.hasOwn(o, key) ? o[key] : undefined)
