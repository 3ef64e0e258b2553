// A small simulated city for the water balance (issue 25 item 6): district metered areas (DMAs),
// each with one inflow (bulk) meter at its edge and customer meters with household and commercial
// demand (the profiles of physics.ts), and the faults a utility looks for:
//   - pipeLeak: a real loss between the inflow meter and the customers (the inflow rises, the
//     customers do not);
//   - stuck: a customer meter that registers nothing from then on while its household keeps using
//     water (which therefore passes the inflow meter: an apparent loss);
//   - bypass: a share of a customer's water taken before its meter (theft): the inflow includes
//     it, the customer meter registers less (an apparent loss); fitting it opened the meter's case
//     (a tamper event as it begins, for the rule that looks for tamper near a consumption drop);
//   - nightLeak: a leak on the customer's side, behind the meter: it registers, and never reaches
//     zero at night.
// Pure and deterministic: the layout (locations, demand scales and phases) comes from a seed, and
// a CityRun integrates the flows over simulated time. The demo (sim/src/demo.ts driveDemo) drives
// the firmware's sensors from a CityRun; the tests turn it into stored readings directly.
import { commercialWaterMlMin, householdWaterMlMin, linePressurePa } from "./physics.js"
import { seededRandom } from "./random.js"

export type CityProfile = "household" | "commercial"

/** A GeoJSON Polygon, WGS 84 [lon, lat] positions (the DMA registry's boundary type). */
export interface CityPolygon {
  type: "Polygon"
  coordinates: number[][][]
}

export interface CityDma {
  dmaId: string
  name: string
  boundary: CityPolygon
  /** The network's size, for the Infrastructure Leakage Index: mains length, km, and service connections. */
  mainsKm: number
  connections: number
}

export interface CityMeter {
  meterId: string
  dmaId: string
  /** "inflow": the DMA's bulk meter (registered as an explicit inflow); "customer": by district. */
  role: "inflow" | "customer"
  /** A customer's demand profile (none for a bulk meter). */
  profile?: CityProfile
  /** Demand = scale × the profile's flow. */
  scale: number
  /** The household's day runs this many hours late (negative: early). */
  shiftH: number
  lat: number
  lon: number
  address: string
}

export type CityEvent =
  /** A pipe leak in the DMA's mains, between the inflow meter and the customers, from fromH on. */
  | { kind: "pipeLeak"; dmaId: string; fromH: number; untilH?: number; flowMlMin: number }
  /** The customer meter registers nothing from fromH on; the household's use goes on. */
  | { kind: "stuck"; meterId: string; fromH: number }
  /**
   * From fromH on, `share` of the customer's demand is taken before its meter; its case is open
   * (tamper switch) for the first `tamperH` hours (0: never).
   */
  | { kind: "bypass"; meterId: string; fromH: number; share: number; tamperH: number }
  /** A leak behind the customer meter (it registers it), from fromH on. */
  | { kind: "nightLeak"; meterId: string; fromH: number; flowMlMin: number }

export interface CityPlan {
  name: string
  description: string
  seed: number
  /** Hour of day (UTC) at simulated time 0. */
  startHour: number
  /** The meters' resolution: the volume of one pulse, mL (PULSES_PER_L 1, the firmware default: 1000). */
  resolutionMl: number
  dmas: CityDma[]
  meters: CityMeter[]
  events: CityEvent[]
}

export function defineCity(c: CityPlan): CityPlan {
  return c
}

export interface SmallCityOptions {
  seed?: number
  startHour?: number
  /** Meter ids by position (default `city-001`, ...): the demo's are demo-001, .... */
  meterId?: (i: number) => string
  /** DMA ids prefix (default "city"): DMAs `<prefix>-north` and `<prefix>-south`. */
  dmaPrefix?: string
  /** When the pipe leak in the north DMA begins, simulated hours. */
  pipeLeakFromH: number
  pipeLeakMlMin?: number
  /** When the south DMA's stuck meter stops registering, simulated hours. */
  stuckFromH: number
  /** When the south DMA's bypass begins (its case opened for a quarter of an hour), simulated hours. */
  bypassFromH: number
  bypassShare?: number
  /** The north DMA's customer-side leak, from the start. */
  nightLeakMlMin?: number
}

/** Lower-left corner of the city (WGS 84); each DMA is a 0.01° × 0.006° block, north above south. */
const ORIGIN = { lon: 7.66, lat: 45.06 }
const BLOCK = { lon: 0.01, lat: 0.006 }

/**
 * Two DMAs of one inflow meter and three customers each (8 meters: small enough for the demo's
 * real firmware VMs). North: two households (one with a customer-side night leak), an office, and
 * a pipe leak from pipeLeakFromH. South: three households, one whose meter sticks at stuckFromH,
 * one with a bypass from bypassFromH.
 */
export function smallCity(o: SmallCityOptions): CityPlan {
  const seed = o.seed ?? 25
  const rnd = seededRandom(seed)
  const id = o.meterId ?? ((i: number) => `city-${String(i).padStart(3, "0")}`)
  const prefix = o.dmaPrefix ?? "city"
  const layout: { dma: "north" | "south"; role: CityMeter["role"]; profile?: CityProfile; street: string }[] = [
    { dma: "north", role: "inflow", street: "North Main (bulk meter)" },
    { dma: "north", role: "customer", profile: "household", street: "Via Roma" },
    { dma: "north", role: "customer", profile: "household", street: "Via Roma" },
    { dma: "north", role: "customer", profile: "commercial", street: "Corso Po" },
    { dma: "south", role: "inflow", street: "South Main (bulk meter)" },
    { dma: "south", role: "customer", profile: "household", street: "Via Garibaldi" },
    { dma: "south", role: "customer", profile: "household", street: "Via Garibaldi" },
    { dma: "south", role: "customer", profile: "household", street: "Via Nizza" },
  ]
  const dmas: CityDma[] = (["north", "south"] as const).map((d) => {
    const lat0 = ORIGIN.lat + (d === "north" ? BLOCK.lat : 0)
    const ring = [
      [ORIGIN.lon, lat0],
      [ORIGIN.lon + BLOCK.lon, lat0],
      [ORIGIN.lon + BLOCK.lon, lat0 + BLOCK.lat],
      [ORIGIN.lon, lat0 + BLOCK.lat],
      [ORIGIN.lon, lat0],
    ]
    return {
      dmaId: `${prefix}-${d}`,
      name: d === "north" ? "North district" : "South district",
      // the block's perimeter and a street across it; a connection per customer
      mainsKm: 3.2,
      connections: 3,
      boundary: { type: "Polygon", coordinates: [ring.map(([x, y]) => [round6(x), round6(y)])] },
    }
  })
  const meters: CityMeter[] = layout.map((l, i) => {
    const lat0 = ORIGIN.lat + (l.dma === "north" ? BLOCK.lat : 0)
    // bulk meters on the DMA's west edge (just inside); customers anywhere inside, 10 % from the edges
    const fx = l.role === "inflow" ? 0.02 : 0.1 + 0.8 * rnd()
    const fy = l.role === "inflow" ? 0.5 : 0.1 + 0.8 * rnd()
    return {
      meterId: id(i + 1),
      dmaId: `${prefix}-${l.dma}`,
      role: l.role,
      profile: l.profile,
      scale: l.role === "inflow" ? 0 : round2(0.7 + 0.6 * rnd()),
      // at most half an hour either way: households' nights stay quiet from 02:00 to 04:00
      shiftH: l.profile === "household" ? round2(rnd() - 0.5) : 0,
      lat: round6(lat0 + fy * BLOCK.lat),
      lon: round6(ORIGIN.lon + fx * BLOCK.lon),
      address: l.role === "inflow" ? l.street : `${1 + Math.floor(rnd() * 120)} ${l.street}`,
    }
  })
  const north = dmas[0].dmaId
  return {
    name: "small-city",
    description:
      "two DMAs: a pipe leak and a customer-side night leak in the north; a stuck meter and a bypass in the south",
    seed,
    startHour: o.startHour ?? 0,
    resolutionMl: 1000,
    dmas,
    meters,
    events: [
      { kind: "pipeLeak", dmaId: north, fromH: o.pipeLeakFromH, flowMlMin: o.pipeLeakMlMin ?? 5000 },
      { kind: "nightLeak", meterId: meters[1].meterId, fromH: 0, flowMlMin: o.nightLeakMlMin ?? 500 },
      { kind: "stuck", meterId: meters[5].meterId, fromH: o.stuckFromH },
      { kind: "bypass", meterId: meters[6].meterId, fromH: o.bypassFromH, share: o.bypassShare ?? 0.6, tamperH: 0.25 },
    ],
  }
}

const round6 = (x: number) => Math.round(x * 1e6) / 1e6
const round2 = (x: number) => Math.round(x * 100) / 100

/** What an event's water went to, per DMA, mL: the losses (real and apparent) and the leak behind a meter. */
export interface CityVolumes {
  /** Real losses: the pipe leaks. */
  pipeLeakMl: number
  /** Used by households whose meter was stuck. */
  stuckMl: number
  /** Taken before a meter. */
  bypassMl: number
  /** Customer-side leaks (registered: billed, not a loss). */
  nightLeakMl: number
}

const active = (e: { fromH: number; untilH?: number }, tH: number) => tH >= e.fromH && tH < (e.untilH ?? Infinity)

/** A meter's flows at an instant, mL/min. */
export interface MeterFlow {
  /** Through the meter's place: a customer's whole use (bypass included), a bulk meter's flow. */
  usedMlMin: number
  /** What the meter registers. */
  registeredMlMin: number
}

/**
 * The city's state over simulated time: advance(tH) integrates every meter's flows up to tH
 * (simulated hours since the start), in steps of at most a simulated minute.
 */
export class CityRun {
  /** Simulated hours since the start. */
  tH = 0
  private readonly registered = new Map<string, number>()
  private readonly used = new Map<string, number>()
  private readonly volumes = new Map<string, CityVolumes>()
  private readonly byDma = new Map<string, CityMeter[]>()
  private readonly inflowOf = new Map<string, CityMeter>()

  constructor(readonly plan: CityPlan) {
    for (const d of plan.dmas) {
      this.byDma.set(d.dmaId, [])
      this.volumes.set(d.dmaId, { pipeLeakMl: 0, stuckMl: 0, bypassMl: 0, nightLeakMl: 0 })
    }
    for (const m of plan.meters) {
      const list = this.byDma.get(m.dmaId)
      if (!list) throw new Error(`city ${plan.name}: meter ${m.meterId} in unknown DMA ${m.dmaId}`)
      if (m.role === "inflow") {
        if (this.inflowOf.has(m.dmaId)) throw new Error(`city ${plan.name}: DMA ${m.dmaId} has two inflow meters`)
        this.inflowOf.set(m.dmaId, m)
      } else list.push(m)
      this.registered.set(m.meterId, 0)
      this.used.set(m.meterId, 0)
    }
  }

  /** Hour of day (UTC) at simulated time tH. */
  hourOfDay(tH: number): number {
    return (((this.plan.startHour + tH) % 24) + 24) % 24
  }

  private customerFlow(m: CityMeter, tH: number) {
    const h = (((this.hourOfDay(tH) - m.shiftH) % 24) + 24) % 24
    const demand = m.scale * (m.profile === "commercial" ? commercialWaterMlMin(h) : householdWaterMlMin(h))
    let nightLeak = 0
    let bypass = 0
    let stuck = false
    for (const e of this.plan.events) {
      if (!active(e, tH) || !("meterId" in e) || e.meterId !== m.meterId) continue
      if (e.kind === "nightLeak") nightLeak += e.flowMlMin
      if (e.kind === "bypass") bypass += e.share * demand
      if (e.kind === "stuck") stuck = true
    }
    const used = demand + nightLeak
    const throughMeter = used - bypass
    return { used, registered: stuck ? 0 : throughMeter, nightLeak, bypass, stuck: stuck ? throughMeter : 0 }
  }

  /** Every meter's flows at tH, and the events' flows per DMA (mL/min). */
  flows(tH: number): { meters: Map<string, MeterFlow>; dmas: Map<string, CityVolumes> } {
    const meters = new Map<string, MeterFlow>()
    const dmas = new Map<string, CityVolumes>()
    for (const d of this.plan.dmas) {
      const v: CityVolumes = { pipeLeakMl: 0, stuckMl: 0, bypassMl: 0, nightLeakMl: 0 }
      let inflow = 0
      for (const c of this.byDma.get(d.dmaId)!) {
        const f = this.customerFlow(c, tH)
        meters.set(c.meterId, { usedMlMin: f.used, registeredMlMin: f.registered })
        inflow += f.used
        v.stuckMl += f.stuck
        v.bypassMl += f.bypass
        v.nightLeakMl += f.nightLeak
      }
      for (const e of this.plan.events)
        if (e.kind === "pipeLeak" && e.dmaId === d.dmaId && active(e, tH)) v.pipeLeakMl += e.flowMlMin
      inflow += v.pipeLeakMl
      const bulk = this.inflowOf.get(d.dmaId)
      if (bulk) meters.set(bulk.meterId, { usedMlMin: inflow, registeredMlMin: inflow })
      dmas.set(d.dmaId, v)
    }
    return { meters, dmas }
  }

  /** Integrates up to `toH` in steps of at most `stepS` simulated seconds (midpoint rule). */
  advance(toH: number, stepS = 60) {
    while (this.tH < toH) {
      const dtH = Math.min(stepS / 3600, toH - this.tH)
      const { meters, dmas } = this.flows(this.tH + dtH / 2)
      const min = dtH * 60
      for (const [id, f] of meters) {
        this.used.set(id, this.used.get(id)! + f.usedMlMin * min)
        this.registered.set(id, this.registered.get(id)! + f.registeredMlMin * min)
      }
      for (const [id, f] of dmas) {
        const v = this.volumes.get(id)!
        v.pipeLeakMl += f.pipeLeakMl * min
        v.stuckMl += f.stuckMl * min
        v.bypassMl += f.bypassMl * min
        v.nightLeakMl += f.nightLeakMl * min
      }
      this.tH += dtH
    }
  }

  /** The meter's register so far, in whole pulses (mL): what a meter counting its pulses shows. */
  registerMl(meterId: string): number {
    const r = this.plan.resolutionMl
    return Math.floor(this.registered.get(meterId)! / r + 1e-9) * r
  }

  /** Water used at the meter's place so far (not rounded), mL. */
  usedMl(meterId: string): number {
    return this.used.get(meterId)!
  }

  /** The events' volumes in the DMA so far (not rounded), mL. */
  injected(dmaId: string): CityVolumes {
    return { ...this.volumes.get(dmaId)! }
  }

  /** Whether the meter's case is open at tH (a bypass being fitted). */
  tamper(meterId: string, tH: number): boolean {
    return this.plan.events.some(
      (e) => e.kind === "bypass" && e.meterId === meterId && tH >= e.fromH && tH < e.fromH + e.tamperH,
    )
  }

  /** Line pressure at the meter, Pa, from the flow through it (physics.ts). */
  pressurePa(meterId: string, tH: number): number {
    return linePressurePa(this.flows(tH).meters.get(meterId)?.usedMlMin ?? 0)
  }
}
