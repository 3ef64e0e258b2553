// A DMA's average zone pressure and its Infrastructure Leakage Index (issue 25 item 5).
//
// Average zone pressure, from the meters' own readings (pressure_avg_pa, read through
// readings_between): per customer meter and bucket, the mean of its intervals' pressure_avg_pa
// weighted by their interval_s (time-weighted: a meter's 15-minute and hourly intervals count by
// the time they cover); the zone's pressure is the plain mean over the customer meters that
// measured any, i.e. weighted by service connection, as Lambert's AZP is meant to be. Bulk
// meters are left out: they sit at the DMA's inlets, the highest pressure in the zone. The whole
// period's figure is each meter's time-weighted mean over the period, averaged over the meters.
//
// The ILI, where the DMA has mains length and connection count (DmaInfrastructure):
//   UARL (L/day) = (18 × Lm + 0.8 × Nc + 25 × Lp) × P
// with Lm mains km, Nc service connections, Lp km of private pipe between property line and meter
// (Nc × avgServiceLengthM / 1000; 0 when not given: meters at the property line), P the average
// pressure in metres head (1 m = 9.80665 kPa). Lambert, Brown, Takizawa & Weimer, "A review of
// performance indicators for real losses from water supply systems", AQUA 48(6), 1999; IWA Task
// Force "Losses from Water Supply Systems: Standard Terminology and Recommended Performance
// Measures", the Blue Pages, IWA 2000. Validated for Nc ≥ 3000 and P ≥ 25 m (inValidatedRange).
//   ILI = CARL / UARL
// with CARL, the current annual real losses as a daily rate, taken as the period's water losses of
// the balance (store/dma-balance.ts dmaBalance by day: system input − billed) / its days. Those
// losses hold the apparent losses too (stuck and under-registering meters, theft): none is
// subtracted, so the ILI is an upper bound (apparentLossesSubtracted: false). No ILI (null) without
// mains length and connections, without pressure readings, or without system input in the period.
import type { Db } from "./db.js"
import { dmaBalance } from "./dma-balance.js"
import type { DmaPressureAnswer, DmaPressureQuery, IliAnswer } from "./dma-store.js"

/** Pa per metre of water head (standard gravity × 1000 kg/m³). */
export const PA_PER_M = 9806.65
const DAY_MS = 86_400_000

export interface IliInput {
  lossesMl: number
  days: number
  pressurePa: number
  mainsKm: number
  connections: number
  avgServiceLengthM: number | null
  provisional: boolean
}

/** Lambert's UARL and the ILI of a period's losses (see the header). */
export function infrastructureLeakageIndex(i: IliInput): IliAnswer {
  const pressureM = i.pressurePa / PA_PER_M
  const privatePipeKm = (i.connections * (i.avgServiceLengthM ?? 0)) / 1000
  const uarlLPerDay = (18 * i.mainsKm + 0.8 * i.connections + 25 * privatePipeKm) * pressureM
  const carlLPerDay = i.lossesMl / 1000 / i.days
  return {
    carlLPerDay,
    uarlLPerDay,
    ili: carlLPerDay / uarlLPerDay,
    pressureM,
    mainsKm: i.mainsKm,
    connections: i.connections,
    privatePipeKm,
    apparentLossesSubtracted: false,
    provisional: i.provisional,
    inValidatedRange: i.connections >= 3000 && pressureM >= 25,
  }
}

export async function dmaPressure(db: Db, q: DmaPressureQuery): Promise<DmaPressureAnswer> {
  const unit = q.bucket === "hour" ? "hour" : "day"
  const { rows } = await db.query(
    `WITH m AS (SELECT meter_id FROM dma_members WHERE dma_id = $1 AND role = 'customer'),
     pm AS (
       SELECT m.meter_id, date_trunc('${unit}', x.ts, 'UTC') AS bucket,
         sum(x.pressure_avg_pa::float8 * x.interval_s) / sum(x.interval_s) AS p, sum(x.interval_s)::float8 AS s
       FROM m CROSS JOIN LATERAL readings_between(m.meter_id, $2, $3) x
       WHERE x.pressure_avg_pa IS NOT NULL AND x.interval_s > 0
       GROUP BY 1, 2)
     SELECT bucket, avg(p) AS avg_pa, count(*) AS meters FROM pm GROUP BY bucket
     UNION ALL
     SELECT NULL, avg(p), count(*) FROM (SELECT meter_id, sum(p * s) / sum(s) AS p FROM pm GROUP BY meter_id) z
     ORDER BY 1 NULLS LAST`,
    [q.dmaId, q.from, q.to],
  )
  const num = (v: unknown) => (v === null || v === undefined ? null : Number(v))
  const whole = rows.find((r) => r.bucket === null)
  const avgPa = num(whole?.avg_pa)
  const meters = Number(whole?.meters ?? 0)
  const buckets = rows
    .filter((r) => r.bucket !== null)
    .map((r) => ({ start: new Date(r.bucket as string), avgPa: num(r.avg_pa), meters: Number(r.meters) }))
  const { rows: net } = await db.query(
    `SELECT mains_km, connections, avg_service_length_m FROM dmas WHERE dma_id = $1`,
    [q.dmaId],
  )
  const d = net[0]
  if (!d || d.mains_km === null || d.connections === null || avgPa === null || avgPa <= 0)
    return { buckets, avgPa, meters, ili: null }
  const balance = await dmaBalance(db, { dmaIds: [q.dmaId], bucket: "day", from: q.from, to: q.to })
  // no system input (no inflow meter, or no data from it): no real losses to speak of
  if (balance.reduce((s, b) => s + b.systemInputMl, 0) <= 0) return { buckets, avgPa, meters, ili: null }
  const ili = infrastructureLeakageIndex({
    lossesMl: balance.reduce((s, b) => s + b.lossesMl, 0),
    days: (q.to.getTime() - q.from.getTime()) / DAY_MS,
    pressurePa: avgPa,
    mainsKm: Number(d.mains_km),
    connections: Number(d.connections),
    avgServiceLengthM: num(d.avg_service_length_m),
    provisional: balance.some((b) => b.provisional),
  })
  return { buckets, avgPa, meters, ili }
}
