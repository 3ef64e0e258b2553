// District metered areas (issue 25 item 1): the network model the water balance reads. A DMA has
// bulk meters at its edges (inflow, outflow; a meter may feed one DMA and drain another) and
// customer meters: by default the meters whose registry district is the DMA's id, plus explicit
// members. Explicit rows (any role) take precedence over the district default, so a bulk meter
// registered in its DMA's district is not also counted as a customer there (view dma_members).
// The balances and night flows read from these (store/dma-balance.ts).
import type { Db } from "./db.js"
import {
  LOSSES_DEFAULTS,
  NIGHT_FLOW_DEFAULTS,
  type DmaBoundary,
  type DmaInput,
  type DmaMember,
  type DmaRole,
  type DmaRow,
  type LossesConfig,
  type NightFlowConfig,
  type PutDmaOutcome,
} from "./dma-store.js"
export * from "./dma-store.js"

export const DMAS_DDL = [
  `CREATE TABLE IF NOT EXISTS dmas (
     dma_id text PRIMARY KEY, name text NOT NULL, parent_id text REFERENCES dmas (dma_id),
     boundary jsonb, night_flow jsonb NOT NULL, updated_at timestamptz NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS dma_meters (
     dma_id text NOT NULL REFERENCES dmas (dma_id) ON DELETE CASCADE, meter_id text NOT NULL,
     role text NOT NULL CHECK (role IN ('inflow', 'outflow', 'customer')), PRIMARY KEY (dma_id, meter_id))`,
  `CREATE INDEX IF NOT EXISTS dma_meters_meter ON dma_meters (meter_id)`,
  // every DMA's meters: explicit rows, then its district's meters not named explicitly
  `CREATE OR REPLACE VIEW dma_members AS
     SELECT dma_id, meter_id, role, 'explicit'::text AS source FROM dma_meters
     UNION ALL
     SELECT d.dma_id, m.meter_id, 'customer', 'district' FROM dmas d JOIN meters m ON m.district = d.dma_id
     WHERE NOT EXISTS (SELECT 1 FROM dma_meters x WHERE x.dma_id = d.dma_id AND x.meter_id = m.meter_id)`,
  // bridge alarms found by (meter, type), newest first: the DMA check asks for each one's newest edge
  `CREATE INDEX IF NOT EXISTS bridge_alarms_meter_type_id ON bridge_alarms (meter_id, type, id)`,
]

/**
 * A later step (issue 25 items 4-5): each DMA's apparent-loss thresholds (NULL: LOSSES_DEFAULTS)
 * and what the utility says of its network for the Infrastructure Leakage Index (NULL: not given).
 */
export const DMA_NETWORK_DDL = [
  `ALTER TABLE dmas ADD COLUMN IF NOT EXISTS losses jsonb`,
  `ALTER TABLE dmas ADD COLUMN IF NOT EXISTS mains_km double precision`,
  `ALTER TABLE dmas ADD COLUMN IF NOT EXISTS connections integer`,
  `ALTER TABLE dmas ADD COLUMN IF NOT EXISTS avg_service_length_m double precision`,
]

/** pg_advisory_xact_lock class of DMA writes and bridge alarm edges ("dm"). */
const LOCK_CLASS = 0x646d

function toDma(r: Record<string, unknown>, meters: { meter_id: string; role: string }[]): DmaRow {
  const of = (role: DmaRole) => meters.filter((m) => m.role === role).map((m) => m.meter_id)
  const json = (v: unknown) => (typeof v === "string" ? (JSON.parse(v) as unknown) : v)
  const num = (v: unknown) => (v === null || v === undefined ? null : Number(v))
  return {
    dmaId: r.dma_id as string,
    name: r.name as string,
    parentId: (r.parent_id as string | null) ?? null,
    boundary: (json(r.boundary) as DmaBoundary | null) ?? null,
    inflow: of("inflow"),
    outflow: of("outflow"),
    customers: of("customer"),
    nightFlow: { ...NIGHT_FLOW_DEFAULTS, ...(json(r.night_flow) as Partial<NightFlowConfig>) },
    losses: { ...LOSSES_DEFAULTS, ...((json(r.losses) as Partial<LossesConfig> | null) ?? {}) },
    mainsKm: num(r.mains_km),
    connections: num(r.connections),
    avgServiceLengthM: num(r.avg_service_length_m),
    updatedAt: new Date(r.updated_at as string),
  }
}

async function read(db: Db, dmaId: string | null): Promise<DmaRow[]> {
  const { rows } = await db.query(`SELECT * FROM dmas WHERE $1::text IS NULL OR dma_id = $1 ORDER BY dma_id`, [dmaId])
  const { rows: meters } = await db.query<{ dma_id: string; meter_id: string; role: string }>(
    `SELECT dma_id, meter_id, role FROM dma_meters WHERE $1::text IS NULL OR dma_id = $1 ORDER BY dma_id, meter_id`,
    [dmaId],
  )
  return rows.map((r) =>
    toDma(
      r,
      meters.filter((m) => m.dma_id === r.dma_id),
    ),
  )
}

export const listDmas = (db: Db) => read(db, null)
export const getDma = async (db: Db, dmaId: string) => (await read(db, dmaId))[0]

export async function putDma(db: Db, d: DmaInput, at: Date): Promise<PutDmaOutcome> {
  return db.transaction(async (tx) => {
    // one DMA write at a time: two parents set at once could close a cycle neither sees
    await tx.query(`SELECT pg_advisory_xact_lock(${LOCK_CLASS}, 0)`)
    if (d.parentId !== null) {
      const { rows } = await tx.query<{ dma_id: string; parent_id: string | null }>(
        `WITH RECURSIVE up AS (
           SELECT dma_id, parent_id, 1 AS depth FROM dmas WHERE dma_id = $1
           UNION ALL SELECT p.dma_id, p.parent_id, up.depth + 1 FROM dmas p JOIN up ON p.dma_id = up.parent_id
           WHERE up.depth < 100)
         SELECT dma_id, parent_id FROM up`,
        [d.parentId],
      )
      if (!rows.length) return { kind: "refused", reason: "parent", detail: `no DMA ${d.parentId}` }
      if (rows.some((r) => r.dma_id === d.dmaId))
        return { kind: "refused", reason: "cycle", detail: `${d.parentId} is ${d.dmaId} or one of its sub-DMAs` }
    }
    const named = [...d.inflow, ...d.outflow, ...d.customers]
    const { rows: known } = await tx.query<{ meter_id: string }>(
      `SELECT meter_id FROM meters WHERE meter_id = ANY($1::text[])`,
      [named],
    )
    const have = new Set(known.map((r) => r.meter_id))
    const unknown = [...new Set(named.filter((m) => !have.has(m)))]
    if (unknown.length)
      return { kind: "refused", reason: "meters", detail: `not registered: ${unknown.slice(0, 10).join(", ")}` }
    const { rows } = await tx.query<{ created: boolean }>(
      `INSERT INTO dmas (dma_id, name, parent_id, boundary, night_flow, updated_at, losses, mains_km, connections,
         avg_service_length_m)
       VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6, $7::jsonb, $8, $9, $10)
       ON CONFLICT (dma_id) DO UPDATE SET name = EXCLUDED.name, parent_id = EXCLUDED.parent_id,
         boundary = EXCLUDED.boundary, night_flow = EXCLUDED.night_flow, updated_at = EXCLUDED.updated_at,
         losses = EXCLUDED.losses, mains_km = EXCLUDED.mains_km, connections = EXCLUDED.connections,
         avg_service_length_m = EXCLUDED.avg_service_length_m
       RETURNING (xmax = 0) AS created`,
      [
        d.dmaId,
        d.name,
        d.parentId,
        d.boundary ? JSON.stringify(d.boundary) : null,
        JSON.stringify(d.nightFlow),
        at,
        d.losses ? JSON.stringify(d.losses) : null,
        d.mainsKm ?? null,
        d.connections ?? null,
        d.avgServiceLengthM ?? null,
      ],
    )
    await tx.query(`DELETE FROM dma_meters WHERE dma_id = $1`, [d.dmaId])
    const roles = [
      ...d.inflow.map(() => "inflow"),
      ...d.outflow.map(() => "outflow"),
      ...d.customers.map(() => "customer"),
    ]
    await tx.query(
      `INSERT INTO dma_meters (dma_id, meter_id, role) SELECT $1, m, r FROM unnest($2::text[], $3::text[]) AS u(m, r)`,
      [d.dmaId, named, roles],
    )
    const [dma] = await read(tx, d.dmaId)
    return { kind: "stored", created: rows[0].created === true, dma }
  })
}

export async function deleteDma(db: Db, dmaId: string): Promise<"deleted" | "missing" | "children"> {
  return db.transaction(async (tx) => {
    await tx.query(`SELECT pg_advisory_xact_lock(${LOCK_CLASS}, 0)`)
    const { rows: kids } = await tx.query(`SELECT 1 FROM dmas WHERE parent_id = $1 LIMIT 1`, [dmaId])
    if (kids.length) return "children"
    const { rows } = await tx.query(`DELETE FROM dmas WHERE dma_id = $1 RETURNING 1`, [dmaId])
    return rows.length ? "deleted" : "missing"
  })
}

export async function dmaMembers(db: Db, dmaId: string): Promise<DmaMember[]> {
  const { rows } = await db.query<{ meter_id: string; role: DmaRole; source: "explicit" | "district" }>(
    `SELECT meter_id, role, source FROM dma_members WHERE dma_id = $1 ORDER BY role, meter_id`,
    [dmaId],
  )
  return rows.map((r) => ({ meterId: r.meter_id, role: r.role, source: r.source }))
}

export async function setBridgeAlarm(db: Db, meterId: string, type: string, active: boolean, value: number, at: Date) {
  return db.transaction(async (tx) => {
    // serialised per (meter, type): the newest edge read here is the newest there is
    await tx.query(`SELECT pg_advisory_xact_lock(${LOCK_CLASS}, hashtext($1))`, [`${meterId} ${type}`])
    const { rows } = await tx.query(
      `INSERT INTO bridge_alarms (meter_id, type, active, ts, value)
       SELECT $1, $2, $3, $4, $5
       WHERE COALESCE((SELECT active FROM bridge_alarms WHERE meter_id = $1 AND type = $2
                       ORDER BY id DESC LIMIT 1), false) <> $3
       RETURNING id`,
      [meterId, type, active, at, Math.round(value)],
    )
    return rows.length === 1
  })
}
