// FIWARE Smart Data Models: a meter's newest reading as NGSI-LD entities (ETSI GS CIM
// 009), for the NGSI-LD read routes (routes/ngsi-ld.ts) and the context-broker forwarder
// (ngsi-forwarder.ts). A water meter is a WaterConsumptionObserved (dataModel.WaterConsumption), an
// electricity meter an ACMeasurement (dataModel.Energy); a meter measuring both is both entities.
// Entities are built normalized (each attribute a Property with observedAt and a UN/CEFACT
// unitCode) and simplified from that into keyValues, so both forms always say the same. The
// keyValues form is what the models' JSON Schemas describe (vendor/smart-data-models,
// tests/system/fiware.test.ts validates against them).
import { OBIS } from "./store/columns.js"
import type { MeterRow, ReadingRow } from "./store/store.js"
import { isMeterId } from "./topics.js"

/** The NGSI-LD core @context (ETSI GS CIM 009, clause 5.5.3); brokers add it when absent. */
export const NGSI_LD_CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"

export type FiwareType = "WaterConsumptionObserved" | "ACMeasurement"

interface Model {
  type: FiwareType
  /** The model's published @context (its examples name it). */
  context: string
  /** The type's expanded URI in that @context. */
  uri: string
  /** Whether a meter's newest reading makes one of these entities. */
  applies(r: ReadingRow): boolean
}

export const MODELS: ReadonlyMap<FiwareType, Model> = new Map<FiwareType, Model>([
  [
    "WaterConsumptionObserved",
    {
      type: "WaterConsumptionObserved",
      context: "https://raw.githubusercontent.com/smart-data-models/dataModel.WaterConsumption/master/context.jsonld",
      uri: "https://smartdatamodels.org/dataModel.WaterConsumption/WaterConsumptionObserved",
      applies: (r) => r.waterTotalMl !== null,
    },
  ],
  [
    "ACMeasurement",
    {
      type: "ACMeasurement",
      context: "https://raw.githubusercontent.com/smart-data-models/dataModel.Energy/master/context.jsonld",
      uri: "https://smartdatamodels.org/dataModel.Energy/ACMeasurement",
      applies: (r) => r.energyTotalWh !== null || r.powerW !== null || r.voltageDv !== null,
    },
  ],
])

/** A type as a query names it: its short name, or its expanded URI. */
export function modelOf(type: string): Model | undefined {
  for (const m of MODELS.values()) if (type === m.type || type === m.uri) return m
  return undefined
}

const ID_PREFIX = "urn:ngsi-ld:"

/** The entity id of a meter in a model: urn:ngsi-ld:<type>:<meter id>. */
export const entityId = (type: FiwareType, meterId: string) => `${ID_PREFIX}${type}:${meterId}`

/** The model and meter an entity id names; undefined when it names none (meter ids have no ':'). */
export function parseEntityId(id: string): { model: Model; meterId: string } | undefined {
  if (!id.startsWith(ID_PREFIX)) return undefined
  const rest = id.slice(ID_PREFIX.length)
  const sep = rest.indexOf(":")
  if (sep < 0) return undefined
  const model = MODELS.get(rest.slice(0, sep) as FiwareType)
  const meterId = rest.slice(sep + 1)
  if (!model || model.type !== rest.slice(0, sep) || !isMeterId(meterId)) return undefined
  return { model, meterId }
}

/** An NGSI-LD attribute in the normalized form. */
export type NgsiAttribute =
  | { type: "Property"; value: unknown; observedAt?: string; unitCode?: string; [sub: string]: unknown }
  | { type: "GeoProperty"; value: { type: "Point"; coordinates: [number, number] } }
  | { type: "Relationship"; object: string }

export interface NgsiEntity {
  id: string
  type: FiwareType
  [attribute: string]: unknown
}

/** What one entity is built from: the meter (its location), its newest reading and its open alarms. */
export interface EntitySource {
  meterId: string
  meter?: Pick<MeterRow, "location"> | null
  reading: ReadingRow
  /** Types of the meter's open alarms (AlarmRow.type, e.g. ALARM_TYPE_LEAK); undefined: not known. */
  openAlarms?: string[]
}

/** The alarm types of a water meter, as FIWARE's WaterConsumptionObserved names them. */
const WATER_ALARMS = ["ALARM_TYPE_LEAK", "ALARM_TYPE_BURST", "ALARM_TYPE_BACKFLOW", "ALARM_TYPE_NO_FLOW"]
const TAMPER_ALARMS = ["ALARM_TYPE_TAMPER", "ALARM_TYPE_MAGNETIC_FIELD"]

/** The meter's entities of every model its reading fits (none when it measures neither). */
export function entitiesOf(s: EntitySource): NgsiEntity[] {
  const out: NgsiEntity[] = []
  for (const m of MODELS.values()) if (m.applies(s.reading)) out.push(normalized(m.type, s))
  return out
}

/** The meter's entity of one model, normalized; undefined when its reading does not fit the model. */
export function entityOf(type: FiwareType, s: EntitySource): NgsiEntity | undefined {
  return MODELS.get(type)!.applies(s.reading) ? normalized(type, s) : undefined
}

function normalized(type: FiwareType, s: EntitySource): NgsiEntity {
  const r = s.reading
  // the reading's time: the end of its interval, when the register values were read
  const observedAt = new Date(r.ts.getTime() + r.intervalS * 1000).toISOString()
  const prop = (value: unknown, unitCode?: string, obis?: string): NgsiAttribute => ({
    type: "Property",
    value,
    observedAt,
    ...(unitCode ? { unitCode } : {}),
    // a property of the property (NGSI-LD clause 4.5.2): the quantity's OBIS code
    ...(obis ? { obis: { type: "Property", value: obis } } : {}),
  })
  const e: NgsiEntity = { id: entityId(type, s.meterId), type }
  e.name = { type: "Property", value: s.meterId }
  e.dateObserved = { type: "Property", value: observedAt }
  const loc = s.meter?.location
  if (loc) e.location = { type: "GeoProperty", value: { type: "Point", coordinates: [loc.lon, loc.lat] } }
  if (loc?.address || loc?.district)
    e.address = {
      type: "Property",
      value: {
        ...(loc.address ? { streetAddress: loc.address } : {}),
        ...(loc.district ? { district: loc.district } : {}),
      },
    }
  e.refDevice = { type: "Relationship", object: `urn:ngsi-ld:Device:${s.meterId}` }

  if (type === "WaterConsumptionObserved") {
    // the model's waterConsumption is an integer; its published example gives litres (unitCode LTR)
    e.waterConsumption = prop(Math.floor(r.waterTotalMl! / 1000), "LTR")
    const openAlarms = s.openAlarms
    if (openAlarms) {
      const has = (types: string[]) => (types.some((t) => openAlarms.includes(t)) ? 1 : 0)
      e.alarmInProgress = prop(has([...WATER_ALARMS, ...TAMPER_ALARMS]))
      e.alarmTamper = prop(has(TAMPER_ALARMS))
      // the model's alarmWaterQuality: "the potential of backflows occurring"
      e.alarmWaterQuality = prop(has(["ALARM_TYPE_BACKFLOW"]))
      // alarmFlowPersistence: continuous water use, our LEAK alarm (continuous flow for leakS)
      e.alarmFlowPersistence = prop(
        openAlarms.includes("ALARM_TYPE_LEAK") ? "In progress persistence" : "No persistence",
      )
    }
    return e
  }
  // ACMeasurement: a single-phase meter; energy in kWh, power in W, voltage in V (the model's units)
  e.phaseType = { type: "Property", value: "singlePhase" }
  if (r.energyTotalWh !== null) e.totalActiveEnergyImport = prop(r.energyTotalWh / 1000, "KWH", OBIS.activeEnergyImport)
  if (r.powerW !== null) e.totalActivePower = prop(r.powerW, "WTT", OBIS.activePower)
  if (r.voltageDv !== null) e.phaseVoltage = prop({ L1: r.voltageDv / 10 }, "VLT", OBIS.voltageL1)
  return e
}

/**
 * The keyValues (simplified) form of a normalized entity (NGSI-LD clause 4.5.4): each attribute
 * its value (a Relationship: its object), its sub-properties (observedAt, unitCode) dropped.
 * refDevice becomes an array, as the Smart Data Models name it.
 */
export function keyValues(e: NgsiEntity): Record<string, unknown> {
  const out: Record<string, unknown> = { id: e.id, type: e.type }
  for (const [k, a] of Object.entries(e)) {
    if (k === "id" || k === "type" || k === "@context") continue
    const attr = a as NgsiAttribute
    out[k] = attr.type === "Relationship" ? (k === "refDevice" ? [attr.object] : attr.object) : attr.value
  }
  return out
}

/** The @context of an entity of this type in application/ld+json: its model's, then the core. */
export const contextOf = (type: FiwareType) => [MODELS.get(type)!.context, NGSI_LD_CORE_CONTEXT]

/** The Link header carrying a type's @context with application/json (ETSI GS CIM 009, 6.3.5). */
export const contextLink = (type: FiwareType) =>
  `<${MODELS.get(type)!.context}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"`
