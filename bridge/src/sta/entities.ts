// The eight entity sets of OGC SensorThings API 1.1 (OGC 18-088) Sensing Core, each a read-only SQL
// view of the data tier: a fixed subquery over meters and readings whose text comes from the set
// definitions only (meter-sets.ts, measurement-sets.ts; request values are always parameters,
// Params in filter.ts). A meter is a Thing; its registered location a Location, a
// HistoricalLocation and the FeatureOfInterest of its Observations; each channel it measures a
// Datastream; the instrument kind a Sensor; the phenomenon an ObservedProperty (electricity with
// its OBIS code, IEC 62056-6-1); each interval reading of a channel an Observation. Units are UCUM
// codes.
import type { EntitySet, SetName } from "./entity-set.js"
import { datastreams, observations, observedProperties, sensors } from "./measurement-sets.js"
import { featuresOfInterest, historicalLocations, locations, things } from "./meter-sets.js"

export const BASE_PATH = "/sta/v1.1"

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
