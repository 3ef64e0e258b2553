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

/**
 * Apparent-loss rules of a DMA (issue 25 item 4; store/dma-losses.ts); each default in LOSSES_DEFAULTS.
 * Days are UTC days of the daily rollup.
 */
export interface LossesConfig {
  /** Stuck meter: a customer meter at zero for at least this many complete days in a row ... */
  stuckDays: number
  /** ... while on each of them at least this % of the DMA's other customer meters with a complete day consumed > 0. */
  stuckNeighbourPct: number
  /** Under-registration: none of the meter's nonzero hours was below this (mL) ... */
  lowFlowMl: number
  /** ... over at least this many nonzero hours, while it has zero hours, ... */
  lowFlowMinHours: number
  /**
   * ... its mean daily use is at least this % of the median of the DMA's customers, and at least half
   * of the DMA's other customers with lowFlowMinHours nonzero hours do have one below lowFlowMl.
   */
  lowFlowUsePct: number
  /** Tamper or magnet near a drop: the mean of the dropDays days after the event's day ... */
  dropDays: number
  /** ... is at least dropPct % below the mean of the baselineDays complete days before it. */
  dropPct: number
  baselineDays: number
  /** Reverse flow: a customer meter's reverse volume in the period at least this (mL), or a backflow alarm. */
  reverseMl: number
}

export const LOSSES_DEFAULTS: LossesConfig = {
  stuckDays: 3,
  stuckNeighbourPct: 50,
  lowFlowMl: 5000,
  lowFlowMinHours: 48,
  lowFlowUsePct: 50,
  dropDays: 7,
  dropPct: 50,
  baselineDays: 14,
  reverseMl: 1,
}

/** What the utility says of a DMA's network, for the Infrastructure Leakage Index (issue 25 item 5). */
export interface DmaInfrastructure {
  /** Length of mains, km (Lm). */
  mainsKm: number | null
  /** Number of service connections (Nc). */
  connections: number | null
  /** Mean length of private pipe between the property line and the meter, m (0: meters at the property line). */
  avgServiceLengthM: number | null
}

export interface DmaInput extends Partial<DmaInfrastructure> {
  dmaId: string
  name: string
  parentId: string | null
  boundary: DmaBoundary | null
  inflow: string[]
  outflow: string[]
  /** Explicit customer meters, beside the meters of the district named as the DMA. */
  customers: string[]
  nightFlow: NightFlowConfig
  /** Absent: LOSSES_DEFAULTS. */
  losses?: LossesConfig
}

export interface DmaRow extends DmaInput {
  losses: LossesConfig
  mainsKm: number | null
  connections: number | null
  avgServiceLengthM: number | null
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
  /** A DMA's apparent losses over whole UTC days [from, to), each with its evidence (store/dma-losses.ts). */
  dmaApparentLosses(q: ApparentLossQuery): Promise<ApparentLoss[]>
  /** A DMA's average zone pressure per bucket and its Infrastructure Leakage Index (store/dma-pressure.ts). */
  dmaPressure(q: DmaPressureQuery): Promise<DmaPressureAnswer>
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

export const APPARENT_LOSS_KINDS = ["stuck", "low-flow", "tamper-drop", "reverse-flow"] as const
export type ApparentLossKind = (typeof APPARENT_LOSS_KINDS)[number]

export interface ApparentLossQuery {
  dmaId: string
  /** Whole UTC days. */
  from: Date
  to: Date
  /** The rules' thresholds; absent: the DMA's own. */
  config?: LossesConfig
}

/** One apparent loss: the meter, the rule, the days [from, to) it covers, and the numbers behind it. */
export interface ApparentLoss {
  meterId: string
  kind: ApparentLossKind
  from: Date
  to: Date
  evidence: Record<string, number | string | boolean | null | (number | string)[]>
}

export interface DmaPressureQuery {
  dmaId: string
  bucket: "hour" | "day"
  /** Whole UTC days. */
  from: Date
  to: Date
}

export interface PressureBucket {
  start: Date
  /** Mean over the customer meters of each one's time-weighted mean pressure_avg_pa, Pa; null: none measured. */
  avgPa: number | null
  /** Customer meters with a pressure reading in the bucket. */
  meters: number
}

export interface IliAnswer {
  /** Current annual real losses as a daily rate: the period's water losses (balance) / its days, L/day. */
  carlLPerDay: number
  /** Lambert's unavoidable annual real losses at the period's average pressure, L/day. */
  uarlLPerDay: number
  /** CARL / UARL. */
  ili: number
  /** The average zone pressure used, m head. */
  pressureM: number
  mainsKm: number
  connections: number
  /** Private pipe between property line and meter, km: connections × avgServiceLengthM / 1000. */
  privatePipeKm: number
  /** The balance's losses hold apparent losses too: none is subtracted. */
  apparentLossesSubtracted: false
  /** Some day of the balance is provisional (coverage < 1). */
  provisional: boolean
  /** Nc ≥ 3000 and P ≥ 25 m, the range in which the UARL formula was validated. */
  inValidatedRange: boolean
}

export interface DmaPressureAnswer {
  buckets: PressureBucket[]
  /** Over the whole period, as a bucket's avgPa. */
  avgPa: number | null
  meters: number
  /** null without mains length and connection count, pressure readings, or system input in the period. */
  ili: IliAnswer | null
}
