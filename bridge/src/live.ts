// Live events for open dashboards. Ingest publishes what each batch committed, after
// its commit; the inactivity check publishes the meters it marks offline; the alarm routes publish
// acknowledgements. GET /events (routes/live.ts) streams them to pages as server-sent events.
// In process: with several bridges sharing the uplink (MQTT_SHARE_GROUP), a page sees the frames
// of the bridge that serves it.
import type { AlarmAck, AlarmKey, AlarmRow, MeterLocation, ReadingRow } from "./store/store.js"

/** A change of a meter's row: status from a birth, a death, the inactivity check or a frame. */
export interface MeterChange {
  meterId: string
  online?: boolean
  inactive?: boolean
  lastSeen?: Date
  firmware?: string
  board?: string
  boot?: number
  queued?: number
  dropped?: number
  location?: MeterLocation | null
}

export type LiveEvent =
  | { kind: "reading"; meterId: string; reading: ReadingRow }
  | { kind: "alarm"; alarm: AlarmRow }
  | { kind: "meter"; meter: MeterChange }
  | { kind: "ack"; key: AlarmKey; ack: AlarmAck }

export type LiveListener = (events: LiveEvent[]) => void

export class LiveBus {
  private readonly listeners = new Set<LiveListener>()

  /** Returns the unsubscribe function. */
  subscribe(fn: LiveListener): () => void {
    this.listeners.add(fn)
    return () => this.listeners.delete(fn)
  }

  get listening() {
    return this.listeners.size
  }

  publish(events: LiveEvent[]) {
    if (!events.length) return
    for (const l of this.listeners) l(events)
  }
}
