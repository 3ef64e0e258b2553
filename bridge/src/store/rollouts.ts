// Rollouts in the data tier (issue 23 items 4-5): a release sent to a fleet in stages, and each
// meter's way through it. The runner (bridge/src/rollouts/runner.ts) moves meters from state to
// state with conditional updates, so a restarted bridge picks up where the last one stopped. One
// rollout at a time per meter: a meter's row is `active` until it ends, and a unique index over the
// active rows refuses a second rollout of the same meter even when two requests race.
import type { Db } from "./db.js"
import type { ReleaseStore } from "./releases.js"

export const ROLLOUT_STATES = ["running", "paused", "cancelled", "halted", "done"] as const
export type RolloutState = (typeof ROLLOUT_STATES)[number]

/** A meter's way through a rollout; the last four end it. */
export const METER_STATES = [
  "pending",
  "transferring",
  "verifying",
  "rolling_back",
  "done",
  "rolled_back",
  "failed",
  "skipped",
] as const
export type MeterUpdateState = (typeof METER_STATES)[number]
export const FINAL_STATES: ReadonlySet<MeterUpdateState> = new Set(["done", "rolled_back", "failed", "skipped"])

/** A stage: a canary share of the meters, the meters of one district, or every meter left. */
export type StageSpec = { kind: "canary"; share: number } | { kind: "district"; district: string } | { kind: "all" }

/** The maintenance window: UTC minutes of the day, [from, to), wrapping past midnight when from > to. */
export interface UpdateHours {
  fromMin: number
  toMin: number
}

export interface RolloutRow {
  id: number
  releaseId: number
  board: string
  version: string
  state: RolloutState
  stages: StageSpec[]
  /** The stage whose meters are being updated (index into stages). */
  stage: number
  /** Meters updated at once. */
  concurrency: number
  hours: UpdateHours | null
  /** How long a deployed meter has to send the Birth of the new version, s. */
  verifyS: number
  /** The update window sent to each meter, s (it must fit the meter's flash queue). */
  windowS: number
  /** Why it halted or was cancelled. */
  reason: string | null
  createdAt: Date
  updatedAt: Date
  /** Meters per state. */
  counts: Partial<Record<MeterUpdateState, number>>
}

export interface RolloutMeterRow {
  rolloutId: number
  meterId: string
  stage: number
  state: MeterUpdateState
  /** Bytes written of the image being sent (the release's, or the rollback's). */
  written: number
  attempts: number
  /** The release the meter ran before (found by its program's SHA-256): the rollback image. */
  fromRelease: number | null
  reason: string | null
  startedAt: Date | null
  updatedAt: Date
}

export type NewRollout = Pick<RolloutRow, "releaseId" | "stages" | "concurrency" | "hours" | "verifyS" | "windowS">

export type CreateOutcome =
  | { kind: "created"; rollout: RolloutRow }
  /** Meters in another rollout that has not ended for them: nothing was written. */
  | { kind: "conflict"; meters: { meterId: string; rolloutId: number }[] }

export interface MeterPatch {
  state?: MeterUpdateState
  written?: number
  attempts?: number
  fromRelease?: number | null
  reason?: string | null
  started?: boolean
}

/** The Store's releases and rollouts (the Store interface extends it). */
export interface RolloutStore extends ReleaseStore {
  /** A rollout and its meters, each in its stage; refused when a meter is in another rollout. */
  createRollout(r: NewRollout, meters: { meterId: string; stage: number }[], at: Date): Promise<CreateOutcome>
  /** Newest first. */
  listRollouts(limit?: number): Promise<RolloutRow[]>
  getRollout(id: number): Promise<RolloutRow | undefined>
  /** Rollouts in these states, oldest first (the runner's). */
  rolloutsIn(states: RolloutState[]): Promise<RolloutRow[]>
  /** The meters of a rollout by meter id, keyset-paged; optionally of one state. */
  rolloutMeters(
    id: number,
    q?: { state?: MeterUpdateState; after?: string; limit?: number },
  ): Promise<RolloutMeterRow[]>
  /**
   * Sets a rollout's state when it is one of `from` (false otherwise); cancelling also ends its
   * pending meters (skipped, 'cancelled').
   */
  setRolloutState(id: number, from: RolloutState[], to: RolloutState, reason: string | null, at: Date): Promise<boolean>
  /** Moves a running rollout from stage `from` to the next. */
  advanceStage(id: number, from: number, at: Date): Promise<boolean>
  /** Updates a meter's row when its state is one of `from`; a final state ends its activity. */
  updateRolloutMeter(id: number, meterId: string, from: MeterUpdateState[], p: MeterPatch, at: Date): Promise<boolean>
  /** The release registered for this board with this SHA-256, if any. */
  releaseBySha(board: string, sha256: string): Promise<number | undefined>
}

export const ROLLOUTS_DDL = [
  `CREATE TABLE IF NOT EXISTS rollouts (
     id bigserial PRIMARY KEY,
     release_id bigint NOT NULL REFERENCES releases (id),
     state text NOT NULL, stages jsonb NOT NULL, stage integer NOT NULL DEFAULT 0,
     concurrency integer NOT NULL CHECK (concurrency > 0),
     hours_from smallint, hours_to smallint, verify_s integer NOT NULL, window_s integer NOT NULL,
     reason text, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS rollout_meters (
     rollout_id bigint NOT NULL REFERENCES rollouts (id),
     meter_id text NOT NULL, stage integer NOT NULL, state text NOT NULL,
     written integer NOT NULL DEFAULT 0, attempts integer NOT NULL DEFAULT 0,
     from_release bigint, reason text, active boolean NOT NULL DEFAULT true,
     started_at timestamptz, updated_at timestamptz NOT NULL,
     PRIMARY KEY (rollout_id, meter_id))`,
  // one rollout at a time per meter, also against two requests at once
  `CREATE UNIQUE INDEX IF NOT EXISTS rollout_meters_one_active ON rollout_meters (meter_id) WHERE active`,
]

const ROLLOUT_COLUMNS = `r.id, r.release_id, rel.board, rel.version, r.state, r.stages, r.stage, r.concurrency,
  r.hours_from, r.hours_to, r.verify_s, r.window_s, r.reason, r.created_at, r.updated_at,
  (SELECT coalesce(jsonb_object_agg(state, n), '{}'::jsonb) FROM
     (SELECT state, count(*) AS n FROM rollout_meters m WHERE m.rollout_id = r.id GROUP BY state) c) AS counts`

const toRollout = (r: Record<string, unknown>): RolloutRow => ({
  id: Number(r.id),
  releaseId: Number(r.release_id),
  board: r.board as string,
  version: r.version as string,
  state: r.state as RolloutState,
  stages: (typeof r.stages === "string" ? JSON.parse(r.stages) : r.stages) as StageSpec[],
  stage: Number(r.stage),
  concurrency: Number(r.concurrency),
  hours: r.hours_from === null ? null : { fromMin: Number(r.hours_from), toMin: Number(r.hours_to) },
  verifyS: Number(r.verify_s),
  windowS: Number(r.window_s),
  reason: (r.reason as string | null) ?? null,
  createdAt: new Date(r.created_at as Date),
  updatedAt: new Date(r.updated_at as Date),
  counts: Object.fromEntries(
    Object.entries((typeof r.counts === "string" ? JSON.parse(r.counts) : r.counts) as Record<string, unknown>).map(
      ([k, v]) => [k, Number(v)],
    ),
  ),
})

const toMeter = (r: Record<string, unknown>): RolloutMeterRow => ({
  rolloutId: Number(r.rollout_id),
  meterId: r.meter_id as string,
  stage: Number(r.stage),
  state: r.state as MeterUpdateState,
  written: Number(r.written),
  attempts: Number(r.attempts),
  fromRelease: r.from_release === null ? null : Number(r.from_release),
  reason: (r.reason as string | null) ?? null,
  startedAt: r.started_at ? new Date(r.started_at as Date) : null,
  updatedAt: new Date(r.updated_at as Date),
})

const FROM_ROLLOUTS = `FROM rollouts r JOIN releases rel ON rel.id = r.release_id`

export async function createRollout(
  db: Db,
  r: NewRollout,
  meters: { meterId: string; stage: number }[],
  at: Date,
): Promise<CreateOutcome> {
  const ids = meters.map((m) => m.meterId)
  const busy = async (tx: Db) =>
    (
      await tx.query(
        `SELECT meter_id, rollout_id FROM rollout_meters WHERE active AND meter_id = ANY($1::text[]) ORDER BY meter_id`,
        [ids],
      )
    ).rows.map((b) => ({ meterId: b.meter_id as string, rolloutId: Number(b.rollout_id) }))
  try {
    return await db.transaction(async (tx) => {
      const taken = await busy(tx)
      if (taken.length) return { kind: "conflict", meters: taken }
      const { rows } = await tx.query(
        `INSERT INTO rollouts (release_id, state, stages, concurrency, hours_from, hours_to, verify_s, window_s, created_at, updated_at)
         VALUES ($1, 'running', $2::jsonb, $3, $4, $5, $6, $7, $8, $8) RETURNING id`,
        [
          r.releaseId,
          JSON.stringify(r.stages),
          r.concurrency,
          r.hours?.fromMin ?? null,
          r.hours?.toMin ?? null,
          r.verifyS,
          r.windowS,
          at,
        ],
      )
      const id = Number(rows[0].id)
      await tx.query(
        `INSERT INTO rollout_meters (rollout_id, meter_id, stage, state, updated_at)
         SELECT $1, m, s, 'pending', $4 FROM unnest($2::text[], $3::int[]) AS t (m, s)`,
        [id, ids, meters.map((m) => m.stage), at],
      )
      return { kind: "created", rollout: (await getRollout(tx, id))! }
    })
  } catch (e) {
    // another rollout took one of the meters between the check and the insert
    if ((e as { code?: string }).code === "23505") return { kind: "conflict", meters: await busy(db) }
    throw e
  }
}

export async function listRollouts(db: Db, limit = 100): Promise<RolloutRow[]> {
  const { rows } = await db.query(`SELECT ${ROLLOUT_COLUMNS} ${FROM_ROLLOUTS} ORDER BY r.id DESC LIMIT $1`, [limit])
  return rows.map(toRollout)
}

export async function getRollout(db: Db, id: number): Promise<RolloutRow | undefined> {
  const { rows } = await db.query(`SELECT ${ROLLOUT_COLUMNS} ${FROM_ROLLOUTS} WHERE r.id = $1`, [id])
  return rows[0] ? toRollout(rows[0]) : undefined
}

export async function rolloutsIn(db: Db, states: RolloutState[]): Promise<RolloutRow[]> {
  const { rows } = await db.query(
    `SELECT ${ROLLOUT_COLUMNS} ${FROM_ROLLOUTS} WHERE r.state = ANY($1::text[]) ORDER BY r.id`,
    [states],
  )
  return rows.map(toRollout)
}

export async function rolloutMeters(
  db: Db,
  id: number,
  q: { state?: MeterUpdateState; after?: string; limit?: number } = {},
): Promise<RolloutMeterRow[]> {
  const { rows } = await db.query(
    `SELECT * FROM rollout_meters WHERE rollout_id = $1 AND ($2::text IS NULL OR state = $2)
       AND ($3::text IS NULL OR meter_id > $3) ORDER BY meter_id LIMIT $4`,
    [id, q.state ?? null, q.after ?? null, q.limit ?? 10_000],
  )
  return rows.map(toMeter)
}

export async function setRolloutState(
  db: Db,
  id: number,
  from: RolloutState[],
  to: RolloutState,
  reason: string | null,
  at: Date,
): Promise<boolean> {
  return db.transaction(async (tx) => {
    const { rows } = await tx.query(
      `UPDATE rollouts SET state = $3, reason = coalesce($4, reason), updated_at = $5
       WHERE id = $1 AND state = ANY($2::text[]) RETURNING id`,
      [id, from, to, reason, at],
    )
    if (!rows.length) return false
    if (to === "cancelled")
      await tx.query(
        `UPDATE rollout_meters SET state = 'skipped', reason = 'cancelled', active = false, updated_at = $2
         WHERE rollout_id = $1 AND state = 'pending'`,
        [id, at],
      )
    return true
  })
}

export async function advanceStage(db: Db, id: number, from: number, at: Date): Promise<boolean> {
  const { rows } = await db.query(
    `UPDATE rollouts SET stage = stage + 1, updated_at = $3 WHERE id = $1 AND stage = $2 AND state = 'running' RETURNING id`,
    [id, from, at],
  )
  return rows.length > 0
}

export async function updateRolloutMeter(
  db: Db,
  id: number,
  meterId: string,
  from: MeterUpdateState[],
  p: MeterPatch,
  at: Date,
): Promise<boolean> {
  const final = p.state !== undefined && FINAL_STATES.has(p.state)
  const { rows } = await db.query(
    `UPDATE rollout_meters SET
       state = coalesce($4, state), written = coalesce($5, written), attempts = coalesce($6, attempts),
       from_release = CASE WHEN $7 THEN $8::bigint ELSE from_release END,
       reason = CASE WHEN $9 THEN $10::text ELSE reason END,
       started_at = CASE WHEN $11 THEN $13::timestamptz ELSE started_at END,
       active = active AND NOT $12, updated_at = $13
     WHERE rollout_id = $1 AND meter_id = $2 AND state = ANY($3::text[]) RETURNING meter_id`,
    [
      id,
      meterId,
      from,
      p.state ?? null,
      p.written ?? null,
      p.attempts ?? null,
      p.fromRelease !== undefined,
      p.fromRelease ?? null,
      p.reason !== undefined,
      p.reason ?? null,
      p.started ?? false,
      final,
      at,
    ],
  )
  return rows.length > 0
}

export async function releaseBySha(db: Db, board: string, sha256: string): Promise<number | undefined> {
  const { rows } = await db.query(`SELECT id FROM releases WHERE board = $1 AND sha256 = $2 ORDER BY id DESC LIMIT 1`, [
    board,
    sha256,
  ])
  return rows[0] ? Number(rows[0].id) : undefined
}
