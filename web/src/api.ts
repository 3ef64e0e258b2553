// The page reads the same API routes as any client (types from the bridge's own serialisers).
import type { dmaJson } from "../../bridge/src/routes/dmas.js"
import type { meterJson } from "../../bridge/src/routes/meters.js"
import type { rolloutJson } from "../../bridge/src/routes/rollouts.js"
import type { ApiReading } from "./types.js"

export type Meter = ReturnType<typeof meterJson>
export type Rollout = ReturnType<typeof rolloutJson>
export type Dma = ReturnType<typeof dmaJson>

/** A DMA with its meters by role (GET /dmas/:id). */
export type DmaDetail = Dma & {
  members: { meterId: string; role: "inflow" | "outflow" | "customer"; source: "explicit" | "district" }[]
}

/** One period of a DMA's water balance (GET /dmas/:id/balance, GET /balances). */
export interface BalanceRow {
  dmaId?: string
  start: string
  inflowMl: number
  outflowMl: number
  systemInputMl: number
  billedMl: number
  lossesMl: number
  nrwShare: number | null
  meters: number
  completeMeters: number
  coverage: number
  provisional: boolean
}

/** One night of a DMA's minimum night flow (GET /dmas/:id/night-flow). */
export interface DmaNight {
  night: string
  minInputMlPerH: number | null
  at: string | null
  customersMl: number | null
  hours: number
  complete: boolean
}

/** An apparent loss (GET /dmas/:id/apparent-losses): a customer meter, its rule and the rule's numbers. */
export interface ApparentLoss {
  meterId: string
  kind: string
  from: string
  to: string
  evidence: Record<string, unknown>
}

/** A DMA's zone pressure over a range and its Infrastructure Leakage Index (GET /dmas/:id/pressure). */
export interface DmaPressure {
  avgPa: number | null
  meters: number
  ili: {
    ili: number | null
    carlLPerDay: number | null
    uarlLPerDay: number | null
    pressureM: number | null
    apparentLossesSubtracted: boolean
    provisional: boolean
  } | null
}

/** A meter of a rollout (GET /rollouts/:rid/meters). */
export interface RolloutMeter {
  meterId: string
  stage: number
  state: string
  written: number
  /** Bytes of the image it is sent (the rollback's while rolling back). */
  size?: number
  attempts: number
  reason: string | null
}

export interface Alarm {
  meterId: string
  boot: number
  seq: number
  type: string
  active: boolean
  ts: string
  value: number
  source: "meter" | "bridge"
  ack?: { by: string; at: string; note: string }
}

export interface ConsumptionRow {
  start: string
  waterMl: number | null
  energyWh: number | null
  readings: number
  gap: boolean
}

export interface District {
  district: string | null
  meters: number
  online: number
  openAlarms: number
  waterMl: number
  energyWh: number
}

export type OpsFigures = {
  at: string
  framesReceived: Record<string, number>
  framesStored: Record<string, number>
  readingsStored: number
  duplicates: number
  rejected: Record<string, number>
  deadLetters: number
  onlineMeters: number
  stalled: boolean
  oldestUnackedS: number
}

export class ApiFailure extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message)
  }
}

async function call<T>(path: string, init?: RequestInit): Promise<T> {
  const res = await fetch(path, init)
  const body = res.headers.get("content-type")?.includes("json") ? await res.json() : await res.text()
  if (!res.ok) {
    const b = body as { error?: string; message?: string }
    throw new ApiFailure(res.status, b?.error ?? String(res.status), b?.message ?? res.statusText)
  }
  return body as T
}

const qs = (q: Record<string, string | number | boolean | undefined>) => {
  const p = new URLSearchParams()
  for (const [k, v] of Object.entries(q)) if (v !== undefined) p.set(k, String(v))
  const s = p.toString()
  return s ? `?${s}` : ""
}

/** Every page of a paged list route (`next` is the `after` of the next page, null on the last). */
async function all<K extends string, T>(
  path: string,
  key: K,
  q: Record<string, string | number | boolean | undefined> = {},
) {
  const out: T[] = []
  let after: string | undefined
  do {
    const page = await call<Record<K, T[]> & { next: string | null }>(`${path}${qs({ ...q, limit: 100000, after })}`)
    out.push(...page[key])
    after = page.next ?? undefined
  } while (after)
  return out
}

/**
 * A meter's readings in a range as rows, read as columns (GET /meters/:id/readings/columns: a
 * year of 15-minute readings is one answer of 3.8 MB, against 12.7 MB as rows, and the bridge
 * reads it without a row per reading), then turned into the row form here.
 */
async function meterReadings(id: string, q: { from?: string; to?: string }) {
  const out: ApiReading[] = []
  let after: string | undefined
  do {
    const page = await call<{
      count: number
      columns: Record<string, (number | boolean | null)[]>
      next: string | null
    }>(`meters/${encodeURIComponent(id)}/readings/columns${qs({ ...q, limit: 100000, after })}`)
    const keys = Object.keys(page.columns)
    for (let i = 0; i < page.count; i++) {
      const r: Record<string, unknown> = {}
      for (const k of keys)
        r[k] = k === "ts" ? new Date(page.columns.ts[i] as number).toISOString() : page.columns[k][i]
      out.push(r as ApiReading)
    }
    after = page.next ?? undefined
  } while (after)
  return out
}

const bearer = (token: string): RequestInit => (token ? { headers: { authorization: `Bearer ${token}` } } : {})

export const api = {
  meters: () => all<"meters", Meter>("meters", "meters"),
  meter: (id: string) => call<Meter>(`meters/${encodeURIComponent(id)}`),
  openAlarms: () => all<"alarms", Alarm>("alarms", "alarms", { open: true }),
  alarms: (q: { from?: string; meter?: string }) => all<"alarms", Alarm>("alarms", "alarms", q),
  meterAlarms: (id: string, q: { from?: string; to?: string }) =>
    all<"alarms", Alarm>(`meters/${encodeURIComponent(id)}/alarms`, "alarms", q),
  readings: meterReadings,
  readingsCsvUrl: (id: string, q: { from?: string; to?: string }) =>
    `meters/${encodeURIComponent(id)}/readings${qs({ ...q, format: "csv", limit: 100000 })}`,
  consumption: (id: string, q: { bucket: string; from?: string; to?: string }) =>
    call<{ consumption: ConsumptionRow[] }>(`meters/${encodeURIComponent(id)}/consumption${qs(q)}`).then(
      (r) => r.consumption,
    ),
  districts: (q: { from?: string }) => call<{ districts: District[] }>(`districts${qs(q)}`).then((r) => r.districts),
  ops: () => call<OpsFigures>("dashboard/ops"),
  dmas: () => call<{ dmas: Dma[] }>("dmas").then((r) => r.dmas),
  dma: (id: string) => call<DmaDetail>(`dmas/${encodeURIComponent(id)}`),
  balances: (q: { bucket: string; from: string; to: string }) =>
    call<{ balances: BalanceRow[] }>(`balances${qs(q)}`).then((r) => r.balances),
  balance: (id: string, q: { bucket: string; from: string; to: string }) =>
    call<{ balance: BalanceRow[] }>(`dmas/${encodeURIComponent(id)}/balance${qs(q)}`).then((r) => r.balance),
  balanceCsvUrl: (id: string | undefined, q: { bucket: string; from: string; to: string }) =>
    `${id === undefined ? "balances" : `dmas/${encodeURIComponent(id)}/balance`}${qs({ ...q, format: "csv" })}`,
  nightFlow: (id: string, q: { from: string; to: string }) =>
    call<{ window: string; tz: string; nights: DmaNight[] }>(`dmas/${encodeURIComponent(id)}/night-flow${qs(q)}`),
  /** Apparent losses; undefined when the bridge has no such route or does not answer it (any failure). */
  apparentLosses: (id: string, q: { from: string; to: string }) =>
    call<{ findings: ApparentLoss[] }>(`dmas/${encodeURIComponent(id)}/apparent-losses${qs(q)}`).then(
      (r) => r.findings,
      () => undefined,
    ),
  pressure: (id: string, q: { from: string; to: string }) =>
    call<DmaPressure>(`dmas/${encodeURIComponent(id)}/pressure${qs({ ...q, bucket: "day" })}`),
  /** Rollouts need a token with the read scope (read, write or ops) even where reads are open. */
  rollouts: (token: string) =>
    call<{ rollouts: Rollout[] }>("rollouts?limit=50", bearer(token)).then((r) => r.rollouts),
  rolloutMeters: (id: number, token: string) =>
    call<{ size: number; meters: RolloutMeter[] }>(`rollouts/${id}/meters?limit=1000`, bearer(token)),
  ack: (a: Alarm, by: string, note: string, token: string) =>
    call<{ created: boolean; ack: { by: string; at: string; note: string } }>(
      `meters/${encodeURIComponent(a.meterId)}/alarms/${a.boot}/${a.seq}/ack`,
      {
        method: "POST",
        headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify({ by, note }),
      },
    ),
}
