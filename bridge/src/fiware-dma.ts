// A district metered area as an NGSI-LD entity (issue 25 item 7). The network is a WaterNetwork of
// FIWARE's dataModel.WaterDistributionManagementEPANET: its name, its boundary as `location` (a
// GeoJSON Polygon or MultiPolygon) and its sub-DMAs as `hasSubNetwork`. No published Smart Data
// Model has a water balance (dataModel.WaterDistribution's WaterDistributionNetwork describes
// storage tanks; the EPANET models describe hydraulic elements), so the balance of the DMA's last
// whole UTC day travels as citymeter's own attributes on the same entity, each a Property in m³
// (UN/CEFACT MTQ) or a fraction (C62) with observedAt the day's end. docs/fiware-dma.md gives the
// mapping and why; tests/system/fiware-dma.test.ts validates the keyValues form against the
// vendored WaterNetwork schema (vendor/smart-data-models).
import type { NgsiAttribute } from "./fiware.js"
import type { DmaBalanceRow, DmaRow } from "./store/dma-store.js"

export const WATER_NETWORK = "WaterNetwork"
/** The model's published @context (dataModel.WaterDistributionManagementEPANET/context.jsonld). */
export const WATER_NETWORK_CONTEXT =
  "https://raw.githubusercontent.com/smart-data-models/dataModel.WaterDistributionManagementEPANET/master/context.jsonld"
/** The type's expanded URI in that @context. */
export const WATER_NETWORK_URI = "https://smartdatamodels.org/dataModel.WaterDistributionManagementEPANET/WaterNetwork"

const PREFIX = `urn:ngsi-ld:${WATER_NETWORK}:`
const DMA_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$/

/** The entity id of a DMA: urn:ngsi-ld:WaterNetwork:<dma id>. */
export const dmaEntityId = (dmaId: string) => `${PREFIX}${dmaId}`

/** The DMA an entity id names; undefined when it names none. */
export function parseDmaEntityId(id: string): string | undefined {
  if (!id.startsWith(PREFIX)) return undefined
  const dmaId = id.slice(PREFIX.length)
  return DMA_ID.test(dmaId) ? dmaId : undefined
}

/** A type as a query names it (short name or expanded URI) is WaterNetwork. */
export const isWaterNetworkType = (type: string) => type === WATER_NETWORK || type === WATER_NETWORK_URI

/**
 * The balance attributes citymeter adds (no Smart Data Model has them), in the order they are
 * given: attribute name, the DmaBalanceRow field, and the UN/CEFACT unit code.
 */
export const BALANCE_ATTRIBUTES = [
  ["systemInputVolume", "systemInputMl", "MTQ"],
  ["billedMeteredConsumption", "billedMl", "MTQ"],
  ["waterLosses", "lossesMl", "MTQ"],
  ["nonRevenueWaterShare", "nrwShare", "C62"],
  ["balanceCoverage", "coverage", "C62"],
  ["balanceProvisional", "provisional", undefined],
] as const satisfies readonly (readonly [string, keyof DmaBalanceRow, string | undefined])[]

export interface DmaEntity {
  id: string
  type: typeof WATER_NETWORK
  [attribute: string]: unknown
}

/**
 * The DMA's entity, normalized: name, location (its boundary, when it has one), hasSubNetwork (its
 * sub-DMAs, when it has any) and, given the balance of a day, that day's balance attributes.
 */
export function dmaEntity(d: DmaRow, children: string[], day?: DmaBalanceRow): DmaEntity {
  const e: DmaEntity = { id: dmaEntityId(d.dmaId), type: WATER_NETWORK }
  e.name = { type: "Property", value: d.name } satisfies NgsiAttribute
  if (d.boundary) e.location = { type: "GeoProperty", value: d.boundary }
  if (children.length) e.hasSubNetwork = { type: "Relationship", object: children.map(dmaEntityId) }
  if (day) {
    const observedAt = new Date(day.start.getTime() + 86_400_000).toISOString()
    for (const [name, field, unitCode] of BALANCE_ATTRIBUTES) {
      const v = day[field]
      if (v === null) continue
      // volumes in m³ (the rows' mL / 10^6)
      const value = unitCode === "MTQ" ? (v as number) / 1e6 : v
      e[name] = { type: "Property", value, observedAt, ...(unitCode ? { unitCode } : {}) }
    }
  }
  return e
}

/** The keyValues form (NGSI-LD clause 4.5.4): each attribute its value, a Relationship its object(s). */
export function dmaKeyValues(e: DmaEntity): Record<string, unknown> {
  const out: Record<string, unknown> = { id: e.id, type: e.type }
  for (const [k, a] of Object.entries(e)) {
    if (k === "id" || k === "type") continue
    const attr = a as { type: string; value?: unknown; object?: unknown }
    out[k] = attr.type === "Relationship" ? attr.object : attr.value
  }
  return out
}
