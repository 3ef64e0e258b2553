// The entity sets of what is measured: each channel a meter measures a Datastream, the instrument
// kind a Sensor, the phenomenon an ObservedProperty (all from channels.ts), and each interval
// reading of a channel an Observation (a view of `readings`).
import { isMeterId } from "../topics.js"
import { CHANNELS, CHANNEL_BY_KEY, OBSERVED_PROPERTIES, SENSORS } from "./channels.js"
import { lit, num, same, text, type EntitySet } from "./entity-set.js"

const OM_MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
const UCUM = "http://unitsofmeasure.org/ucum.html"

const values = (rows: (string | null)[][], cols: string[]) =>
  `(VALUES ${rows.map((r) => `(${r.map((v) => (v === null ? "NULL::text" : lit(v))).join(", ")})`).join(", ")}) AS v(${cols.join(", ")})`

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

export const datastreams: EntitySet = {
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
      meter: "meter_id",
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

export const sensors: EntitySet = {
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

export const observedProperties: EntitySet = {
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
const observationsOf = (readings: string) => `SELECT r.meter_id, v.ch, r.ts, r.interval_s, r.boot, r.seq, r.idx,
      r.time_synced, r.backfill, r.ts_estimated, r.after_reboot, v.result
    FROM ${readings} r CROSS JOIN LATERAL ${PER_CHANNEL}
    WHERE v.result IS NOT NULL`

export const observations: EntitySet = {
  name: "Observations",
  from: observationsOf("readings_all"),
  // one meter's, a month at a time (time-windows.ts): readings_between decodes that month's block only
  byMeterTime: {
    from: (m, t0, t1) => observationsOf(`readings_between(${m}, ${t0}, ${t1})`),
    span: (m) => `SELECT
        least((SELECT min(ts) FROM readings WHERE meter_id = ${m}),
          (SELECT min(first_ts) FROM reading_blocks WHERE meter_id = ${m})) AS lo,
        greatest((SELECT max(ts) FROM readings WHERE meter_id = ${m}),
          (SELECT max(last_ts) FROM reading_blocks WHERE meter_id = ${m})) AS hi`,
  },
  // counting reads each channel's column in a scan of its own: 2-4x faster than the lateral list
  // over 1M Observations, but its order needs a sort, so pages use `from`
  countFrom: CHANNELS.map(
    (c) =>
      `SELECT r.meter_id, ${lit(c.ch)}::text AS ch, r.ts, r.interval_s, r.boot, r.seq, r.idx, r.time_synced,
        r.backfill, r.ts_estimated, r.after_reboot, (${c.result})::float8 AS result FROM readings_all r WHERE ${c.result} IS NOT NULL`,
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
