// Server-sent events from the bridge (GET /events, bridge/src/routes/live.ts). EventSource
// reconnects by itself; on a reconnect the page reloads what it shows (events may have been missed).
import type { Alarm, Meter } from "./api.js"
import type { ApiReading } from "./types.js"

export type LiveMsg =
  | { event: "reading"; data: { meterId: string; reading: ApiReading } }
  | { event: "alarm"; data: { alarm: Alarm } }
  | { event: "meter"; data: { meter: Partial<Meter> & { meterId: string } } }
  | { event: "ack"; data: { key: { meterId: string; boot: number; seq: number }; ack: Alarm["ack"] } }
  | { event: "resync"; data: object }

declare global {
  interface Window {
    /** For tests and the curious: when the last live event of each kind arrived (Date.now()). */
    citymeterLive?: { connected: boolean; lastAt: Record<string, number>; received: number }
  }
}

export function connectLive(handle: (msgs: LiveMsg[]) => void) {
  const state: NonNullable<Window["citymeterLive"]> = { connected: false, lastAt: {}, received: 0 }
  window.citymeterLive = state
  const label = document.getElementById("live-state")
  const es = new EventSource("events")
  let batch: LiveMsg[] = []
  let opened = false
  const flush = () => {
    const msgs = batch
    batch = []
    if (msgs.length) handle(msgs)
  }
  es.onopen = () => {
    state.connected = true
    if (label) label.textContent = "Live: connected"
    if (opened) handle([{ event: "resync", data: {} }])
    opened = true
  }
  es.onerror = () => {
    state.connected = false
    if (label) label.textContent = "Live: reconnecting…"
  }
  for (const kind of ["reading", "alarm", "meter", "ack", "resync"] as const)
    es.addEventListener(kind, (e) => {
      state.lastAt[kind] = Date.now()
      state.received++
      if (!batch.length) queueMicrotask(flush)
      batch.push({ event: kind, data: JSON.parse((e as MessageEvent).data) } as LiveMsg)
    })
}
