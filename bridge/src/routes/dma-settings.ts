// The settings of a DMA's apparent-loss rules and of its Infrastructure Leakage Index (issue 25
// items 4-5) as PUT /dmas/:id takes them and GET /dmas/:id answers them (routes/dmas.ts).
import { LOSSES_DEFAULTS, type DmaRow } from "../store/dma-store.js"

const int = (max: number, min: number, description: string) => ({
  type: "integer",
  minimum: min,
  maximum: max,
  description,
})
const D = LOSSES_DEFAULTS

/** PUT /dmas/:id `losses`: each absent field takes its default. */
export const LOSSES_BODY = {
  type: "object",
  additionalProperties: false,
  properties: {
    stuckDays: int(60, 1, `stuck meter: complete UTC days at zero in a row (default ${D.stuckDays})`),
    stuckNeighbourPct: int(
      100,
      0,
      `... while ≥ this % of the other customers consumed (default ${D.stuckNeighbourPct})`,
    ),
    lowFlowMl: int(1e9, 1, `under-registration: no nonzero hour below this, mL (default ${D.lowFlowMl})`),
    lowFlowMinHours: int(10_000, 1, `... over at least this many nonzero hours (default ${D.lowFlowMinHours})`),
    lowFlowUsePct: int(1000, 0, `... with a mean daily use ≥ this % of the DMA's median (default ${D.lowFlowUsePct})`),
    dropDays: int(60, 1, `tamper/magnet: days after the event judged (default ${D.dropDays})`),
    dropPct: int(100, 1, `... their mean at least this % below the baseline (default ${D.dropPct})`),
    baselineDays: int(60, 1, `... the baseline's days before the event (default ${D.baselineDays})`),
    reverseMl: int(1e12, 1, `reverse flow: at least this much in the period, mL (default ${D.reverseMl})`),
  },
} as const

/** PUT /dmas/:id: the network's size for the ILI, each optional (null: not known). */
export const NETWORK_BODY_PROPS = {
  mainsKm: { type: "number", minimum: 0, maximum: 1e6, nullable: true, description: "length of mains, km (Lm)" },
  connections: { type: "integer", minimum: 0, maximum: 1e8, nullable: true, description: "service connections (Nc)" },
  avgServiceLengthM: {
    type: "number",
    minimum: 0,
    maximum: 10_000,
    nullable: true,
    description: "mean private pipe between property line and meter, m (absent: 0, meters at the property line)",
  },
} as const

export const networkJson = (d: DmaRow) => ({
  losses: d.losses,
  mainsKm: d.mainsKm,
  connections: d.connections,
  avgServiceLengthM: d.avgServiceLengthM,
})
