// Database rows (snake_case; bigint and numeric columns arrive as strings from pg) to the Store's
// row types. Every read of the store maps its rows here.
import { READING_COLUMNS } from "./columns.js"
import type { AlarmAck, AlarmRow, ConsumptionRow, DeadLetterRow, MeterRow, ReadingRow } from "./store.js"

type Row = Record<string, unknown>

/** A nullable number column. */
export const n = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v))

/** A reading row, column by column as READING_COLUMNS types them. */
export function toReading(row: Row): ReadingRow {
  const out: Record<string, unknown> = {}
  for (const c of READING_COLUMNS) {
    const v = row[c.column]
    out[c.key] =
      v === null || v === undefined
        ? null
        : c.sql === "timestamptz"
          ? new Date(v as Date)
          : c.sql === "integer" || c.sql === "bigint"
            ? Number(v)
            : v
  }
  return out as unknown as ReadingRow
}

export function toMeter(r: Row): MeterRow {
  return {
    meterId: r.meter_id as string,
    online: r.online as boolean,
    firstSeen: new Date(r.first_seen as Date),
    lastSeen: new Date(r.last_seen as Date),
    firmware: (r.firmware as string) ?? null,
    board: (r.board as string) ?? null,
    boot: n(r.boot),
    intervalS: n(r.interval_s),
    batch: n(r.batch),
    uptimeEpochMs: n(r.uptime_epoch_ms),
    inactive: !!r.inactive,
    birthSeq: n(r.birth_seq),
    bornAt: r.born_at ? new Date(r.born_at as Date) : null,
    birthLink: n(r.birth_link),
    channels: (r.channels as string[] | null) ?? [],
    alarmRules: (r.alarm_rules as string[] | null) ?? [],
    queued: n(r.queued),
    dropped: n(r.dropped),
    unstored: n(r.unstored),
    location:
      r.lat === null || r.lat === undefined
        ? null
        : {
            lat: Number(r.lat),
            lon: Number(r.lon),
            address: (r.address as string) ?? null,
            district: (r.district as string) ?? null,
          },
    seal: {
      policy: r.seal_policy === "sealed" ? "sealed" : "open",
      key: r.seal_key ? new Uint8Array(r.seal_key as Uint8Array) : null,
      nextKey: r.seal_key_next ? new Uint8Array(r.seal_key_next as Uint8Array) : null,
    },
  }
}

/** An acknowledgement's columns (acked_by, acked_at, note). */
export const toAck = (r: Row): AlarmAck => ({
  by: r.acked_by as string,
  at: new Date(r.acked_at as Date),
  note: r.note as string,
})

export function toAlarm(r: Row): AlarmRow {
  return {
    meterId: r.meter_id as string,
    boot: Number(r.boot),
    seq: Number(r.seq),
    type: r.type as string,
    active: r.active as boolean,
    ts: new Date(r.ts as Date),
    value: Number(r.value),
    source: r.source as AlarmRow["source"],
    ...(r.acked_by ? { ack: toAck(r) } : {}),
  }
}

/** A consumption bucket; the water and energy columns are named `water` and `energy`. */
export function toConsumption(r: Row): ConsumptionRow {
  return {
    start: new Date(r.start as Date),
    waterMl: n(r.water),
    energyWh: n(r.energy),
    reverseMl: n(r.reverse_ml),
    readings: Number(r.readings),
    gap: !!r.gap,
  }
}

export function toDeadLetter(r: Row): DeadLetterRow {
  return {
    id: Number(r.id),
    receivedAt: new Date(r.received_at as Date),
    topic: r.topic as string,
    meterId: (r.meter_id as string) ?? null,
    reason: r.reason as string,
    detail: r.detail as string,
    payloadHead: new Uint8Array(r.payload as Uint8Array),
    payloadBytes: Number(r.payload_bytes),
    payloadSha256: r.payload_sha256 as string,
    storedSha256: (r.stored_sha256 as string) ?? null,
  }
}
