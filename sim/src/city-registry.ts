// Registers a simulated city (sim/src/city.ts) in the data tier: every meter's place (lat, lon,
// address, and its DMA as district, so the customers are the DMA's by district) and every DMA with
// its GeoJSON boundary and its inflow meter (explicit: it takes precedence over its district), the
// default night-flow and apparent-loss settings, and the network's size for the ILI. Through the
// Store, as the registry's PUT /dmas/:id does; used by the demo at start (scripts/demo.ts) and by
// the city tests. The meters must be registered already.
import { NIGHT_FLOW_DEFAULTS } from "../../bridge/src/store/dmas.js"
import type { Store } from "../../bridge/src/store/store.js"
import type { CityPlan } from "./city.js"

export async function registerCity(store: Store, plan: CityPlan, at = new Date()): Promise<void> {
  for (const m of plan.meters)
    await store.setLocation(m.meterId, { lat: m.lat, lon: m.lon, address: m.address, district: m.dmaId })
  for (const d of plan.dmas) {
    const out = await store.putDma(
      {
        dmaId: d.dmaId,
        name: d.name,
        parentId: null,
        boundary: d.boundary,
        inflow: plan.meters.filter((m) => m.dmaId === d.dmaId && m.role === "inflow").map((m) => m.meterId),
        outflow: [],
        customers: [],
        nightFlow: NIGHT_FLOW_DEFAULTS,
        mainsKm: d.mainsKm,
        connections: d.connections,
        avgServiceLengthM: 0,
      },
      at,
    )
    if (out.kind === "refused") throw new Error(`city ${plan.name}: DMA ${d.dmaId} refused: ${out.detail}`)
  }
}
