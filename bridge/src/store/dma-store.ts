// The Store's DMA members and their types (store/dmas.ts and store/dma-balance.ts implement
// them), apart from the SQL so that the Store interface does not import it (which imports the
// Store's row types): type-only imports count as circles too (tests/unit/layout.test.ts).
export const DMA_ROLES = ["inflow", "outflow", "customer"] as const
export type DmaRole = (typeof DMA_ROLES)[number]

/** A GeoJSON Polygon or MultiPolygon (RFC 7946 §3.1.6-7), WGS 84 [lon, lat] positions. */
export type DmaBoundary =
  { type: "Polygon"; coordinates: number[][][] } | { type: "MultiPolygon"; coordinates: number[][][][] }

/** Minimum night flow settings of a DMA (issue 25 item 3); each default in NIGHT_FLOW_DEFAULTS. */
export interface NightFlowConfig {
  /** The window in local hours [fromHour, toHour), wrapping past midnight when fromHour > toHour. */
  fromHour: number
  toHour: number
  /** IANA time zone of the window. */
  tz: string
  /** Nights before the one judged whose median is the baseline. */
  baselineNights: number
  /** A leak onset: the night's minimum flow above the baseline by more than both of these. */
  riseMlPerH: number
  risePct: number
  /** A customer-side leak: a customer meter that never reached zero in this many complete nights in a row. */
  customerNights: number
}

export const NIGHT_FLOW_DEFAULTS: NightFlowConfig = {
  fromHour: 2,
  toHour: 4,
  tz: "UTC",
  baselineNights: 7,
  riseMlPerH: 50_000,
  risePct: 20,
  customerNights: 3,
}

export interface DmaInput {
  dmaId: string
  name: string
  parentId: string | null
  boundary: DmaBoundary | null
  inflow: string[]
  outflow: string[]
  /** Explicit customer meters, beside the meters of the district named as the DMA. */
  customers: string[]
  nightFlow: NightFlowConfig
}

export interface DmaRow extends DmaInput {
  updatedAt: Date
}

export interface DmaMember {
  meterId: string
  role: DmaRole
  /** "explicit": named in the DMA; "district": its registry district is the DMA's id. */
  source: "explicit" | "district"
}

export type PutDmaOutcome =
  | { kind: "stored"; created: boolean; dma: DmaRow }
  | { kind: "refused"; reason: "parent" | "cycle" | "meters"; detail: string }

export interface DmaStore {
  /** Creates or replaces a DMA and its explicit meters; refused for an unknown parent, a cycle of parents or unknown meters. */
  putDma(d: DmaInput, at: Date): Promise<PutDmaOutcome>
  /** Every DMA by id. */
  listDmas(): Promise<DmaRow[]>
  getDma(dmaId: string): Promise<DmaRow | undefined>
  /** Deletes a DMA without sub-DMAs: "deleted", "missing", or "children" (it is a parent). */
  deleteDma(dmaId: string): Promise<"deleted" | "missing" | "children">
  /** A DMA's meters by role, explicit members and its district's meters. */
  dmaMembers(dmaId: string): Promise<DmaMember[]>
  /** The water balance of DMAs per period (store/dma-balance.ts). */
  dmaBalance(q: DmaBalanceQuery): Promise<DmaBalanceRow[]>
  /** Minimum night flow of a DMA and of its customer meters, per night (store/dma-balance.ts). */
  dmaNightFlow(q: NightFlowQuery): Promise<NightFlowAnswer>
  /**
   * Raises (active) or clears a bridge alarm of `type` on `meterId`, unless its newest edge is
   * already that: exactly once, also with several bridges at once. Returns whether it wrote an edge.
   */
  setBridgeAlarm(meterId: string, type: string, active: boolean, value: number, at: Date): Promise<boolean>
}

export const BALANCE_BUCKETS = ["hour", "day", "month"] as const
export type BalanceBucket = (typeof BALANCE_BUCKETS)[number]

export interface DmaBalanceQuery {
  /** The DMAs; absent: every DMA. */
  dmaIds?: string[]
  bucket: BalanceBucket
  /** [from, to): whole UTC hours (hour), days (day) or month starts (month). */
  from: Date
  to: Date
}

export interface DmaBalanceRow {
  dmaId: string
  start: Date
  /** Σ inflow meters' forward − reverse volume, mL. */
  inflowMl: number
  /** Σ outflow meters' forward − reverse volume, mL. */
  outflowMl: number
  /** System input volume: inflow − outflow, mL. */
  systemInputMl: number
  /** Billed metered consumption: Σ customer meters, mL. */
  billedMl: number
  /** Water losses: system input − billed, mL. */
  lossesMl: number
  /** Non-revenue water share: losses / system input; null when the input is not positive. */
  nrwShare: number | null
  /** The DMA's meters (inflow, outflow and customers). */
  meters: number
  /** Of those, meters with every interval of the period stored. */
  completeMeters: number
  /** completeMeters / meters (0 for a DMA without meters). */
  coverage: number
  /** coverage < 1: a late frame may still change the figures. */
  provisional: boolean
}

export interface NightFlowQuery {
  dmaId: string
  /** Nights whose window starts in [from, to). */
  from: Date
  to: Date
  window: Pick<NightFlowConfig, "fromHour" | "toHour" | "tz">
  /** Include each customer meter's minimum per night. */
  meters?: boolean
}

export interface DmaNight {
  /** The local date on which the window starts (YYYY-MM-DD). */
  night: string
  /** The lowest hourly system input in the window, mL/h (null: no bulk meter data). */
  minInputMlPerH: number | null
  /** The hour (its start) of that minimum. */
  at: Date | null
  /** The customers' consumption in that hour, mL. */
  customersMl: number | null
  /** Hours of the window with data from the bulk meters. */
  hours: number
  /** Every hour of the window complete for every bulk meter. */
  complete: boolean
}

export interface MeterNight {
  meterId: string
  night: string
  /** The meter's lowest hourly consumption in the window, mL/h. */
  minMlPerH: number | null
  /** Every hour of the window stored for this meter. */
  complete: boolean
}

export interface NightFlowAnswer {
  dma: DmaNight[]
  meters: MeterNight[]
}
