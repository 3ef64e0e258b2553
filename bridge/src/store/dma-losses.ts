// A DMA's apparent losses (issue 25 item 4): the reads behind the rules of store/dma-loss-rules.ts.
// Daily and hourly consumption of the DMA's customer meters come from the same per-meter bucket
// rows as the balance (store/dma-balance.ts meterBuckets: the rollups, or readings_between before
// compaction's horizon by hour), so a finding's numbers are the balance's; alarm edges come from
// alarm_events. Days are read from LOOKBACK_DAYS (at least the drop baseline) before `from`, for a
// stuck meter's last non-zero day and a tamper event's baseline.
import type { Db } from "./db.js"
import { meterBuckets } from "./dma-balance.js"
import { BACKFLOW_TYPE, DAY_MS, judgeLosses, TAMPER_TYPES, type MeterDay, type MeterHours } from "./dma-loss-rules.js"
import { LOSSES_DEFAULTS, type ApparentLoss, type ApparentLossQuery } from "./dma-store.js"

/** Days read before `from`, beside the drop baseline when that is longer. */
export const LOOKBACK_DAYS = 31

const num = (v: unknown) => (v === null || v === undefined ? null : Number(v))

async function customersOf(db: Db, dmaId: string) {
  const { rows } = await db.query<{ meter_id: string }>(
    `SELECT meter_id FROM dma_members WHERE dma_id = $1 AND role = 'customer' ORDER BY meter_id`,
    [dmaId],
  )
  return rows.map((r) => r.meter_id)
}

async function days(db: Db, meters: string[], from: Date, to: Date): Promise<MeterDay[]> {
  const source = await meterBuckets(db, "day", from, [])
  const { rows } = await db.query(
    `WITH m AS (SELECT unnest($1::text[]) AS meter_id), ${source}
     SELECT meter_id, bucket, water, reverse_ml, complete FROM b ORDER BY meter_id, bucket`,
    [meters, from, to],
  )
  return rows.map((r) => ({
    meterId: r.meter_id as string,
    day: new Date(r.bucket as string).getTime(),
    waterMl: num(r.water),
    reverseMl: num(r.reverse_ml),
    complete: r.complete === true,
  }))
}

async function hours(db: Db, meters: string[], from: Date, to: Date, lowFlowMl: number): Promise<MeterHours[]> {
  const source = await meterBuckets(db, "hour", from, meters)
  const { rows } = await db.query(
    `WITH m AS (SELECT unnest($1::text[]) AS meter_id), ${source}
     SELECT meter_id, count(*) FILTER (WHERE water > 0) AS nonzero, count(*) FILTER (WHERE water = 0) AS zero,
       count(*) FILTER (WHERE water > 0 AND water < $4) AS small, min(water) FILTER (WHERE water > 0) AS smallest
     FROM b WHERE complete GROUP BY meter_id ORDER BY meter_id`,
    [meters, from, to, lowFlowMl],
  )
  return rows.map((r) => ({
    meterId: r.meter_id as string,
    nonzero: Number(r.nonzero),
    zero: Number(r.zero),
    small: Number(r.small),
    smallestNonzeroMl: num(r.smallest),
  }))
}

/** Tamper, magnet and backflow edges in [from, to), and each (meter, type)'s last edge before from. */
async function alarmEdges(db: Db, meters: string[], from: Date, to: Date) {
  const types = [...TAMPER_TYPES, BACKFLOW_TYPE]
  const { rows } = await db.query(
    `SELECT meter_id, type, active, ts FROM alarm_events
     WHERE meter_id = ANY($1::text[]) AND type = ANY($2::text[]) AND ts >= $3 AND ts < $4
     UNION ALL
     (SELECT DISTINCT ON (meter_id, type) meter_id, type, active, ts FROM alarm_events
      WHERE meter_id = ANY($1::text[]) AND type = ANY($2::text[]) AND ts < $3
      ORDER BY meter_id, type, ts DESC)`,
    [meters, types, from, to],
  )
  return rows.map((r) => ({
    meterId: r.meter_id as string,
    type: r.type as string,
    active: r.active === true,
    ts: new Date(r.ts as string),
  }))
}

export async function dmaApparentLosses(db: Db, q: ApparentLossQuery): Promise<ApparentLoss[]> {
  let cfg = q.config
  if (!cfg) {
    const { rows } = await db.query<{ losses: unknown }>(`SELECT losses FROM dmas WHERE dma_id = $1`, [q.dmaId])
    const stored = typeof rows[0]?.losses === "string" ? (JSON.parse(rows[0].losses) as unknown) : rows[0]?.losses
    cfg = { ...LOSSES_DEFAULTS, ...((stored as object | null) ?? {}) }
  }
  const customers = await customersOf(db, q.dmaId)
  if (!customers.length) return []
  const lookback = new Date(q.from.getTime() - Math.max(LOOKBACK_DAYS, cfg.baselineDays) * DAY_MS)
  // independent reads: on a pool they run side by side
  const [d, h, alarms] = await Promise.all([
    days(db, customers, lookback, q.to),
    hours(db, customers, q.from, q.to, cfg.lowFlowMl),
    alarmEdges(db, customers, q.from, q.to),
  ])
  return judgeLosses({
    customers,
    days: d,
    hours: h,
    alarms,
    from: q.from,
    to: q.to,
    cfg,
  })
}
