// What the page knows of the fleet: meters and open alarms, loaded once, then kept current by
// the live events (live.ts) without reloading.
import { api, type Alarm, type Meter } from "./api.js"

export type Status = "online" | "offline" | "inactive"
export const statusOf = (m: Meter): Status => (m.inactive ? "inactive" : m.online ? "online" : "offline")

export const fleet = {
  meters: new Map<string, Meter>(),
  /** Open alarms by meter (the newest edge of each type is a raise). */
  open: new Map<string, Alarm[]>(),
  loaded: false,
}

export const openCount = (meterId: string) => fleet.open.get(meterId)?.length ?? 0

export async function loadFleet() {
  const [meters, open] = await Promise.all([api.meters(), api.openAlarms()])
  fleet.meters = new Map(meters.map((m) => [m.meterId, m]))
  setOpen(open)
  fleet.loaded = true
}

export function setOpen(open: Alarm[]) {
  fleet.open = new Map()
  for (const a of open) fleet.open.set(a.meterId, [...(fleet.open.get(a.meterId) ?? []), a])
  const el = document.getElementById("open-count")
  if (el) el.textContent = open.length ? `(${open.length} open)` : ""
}

/** Applies a live alarm edge: a raise opens its (meter, type), a clear closes it. */
export function applyAlarm(a: Alarm) {
  const list = (fleet.open.get(a.meterId) ?? []).filter((x) => x.type !== a.type)
  if (a.active) list.push(a)
  if (list.length) fleet.open.set(a.meterId, list)
  else fleet.open.delete(a.meterId)
  setOpen([...fleet.open.values()].flat())
}
