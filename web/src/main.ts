// The operator's dashboard: one page, views chosen by the URL's hash, fed by the same
// API routes as any client and kept current by server-sent events (GET /events).
import { announce } from "./dom.js"
import { alarmsView } from "./alarms.js"
import { fleetView } from "./fleet.js"
import { dmaView } from "./dma.js"
import { dmasView } from "./dmas.js"
import { connectLive, type LiveMsg } from "./live.js"
import { mapView } from "./map.js"
import { meterView } from "./meter.js"
import { opsView } from "./ops.js"
import { applyAlarm, fleet, loadFleet } from "./state.js"
import type { View } from "./view.js"

let current: View | undefined
/**
 * Live messages that arrived while `view` was still rendering: a view's elements exist only once
 * its render has finished, so they are held and handed over then (seen: a live event drew into a
 * table not made yet, TypeError … 'replaceChildren').
 */
let rendering: { view: View; held: LiveMsg[] } | undefined

function route(): View {
  const [, name, ...rest] = location.hash.split("/")
  switch (name) {
    case "meter":
      return meterView(decodeURIComponent(rest.join("/")))
    case "map":
      return mapView()
    case "dmas":
      return dmasView()
    case "dma":
      return dmaView(decodeURIComponent(rest.join("/")))
    case "alarms":
      return alarmsView()
    case "ops":
      return opsView()
    default:
      return fleetView()
  }
}

async function show() {
  current?.destroy?.()
  const view = route()
  current = view
  const main = document.getElementById("main")!
  main.replaceChildren()
  main.setAttribute("aria-busy", "true")
  const hashName = location.hash.split("/")[1] || "fleet"
  // a district's own view is under Districts in the navigation
  const name = hashName === "dma" ? "dmas" : hashName
  for (const a of document.querySelectorAll<HTMLAnchorElement>("nav a[data-view]"))
    if (a.dataset.view === name) a.setAttribute("aria-current", "page")
    else a.removeAttribute("aria-current")
  const mine = { view, held: [] as LiveMsg[] }
  rendering = mine
  try {
    if (!fleet.loaded) await loadFleet()
    await view.render(main)
  } catch (e) {
    main.append(Object.assign(document.createElement("p"), { role: "alert", textContent: String(e) }))
  }
  if (rendering === mine) rendering = undefined
  if (current === view && mine.held.length) view.onLive?.(mine.held)
  main.removeAttribute("aria-busy")
  document.title = `${view.title} — citymeter`
  // focus moves to the new view's heading, so a screen reader reads where it is
  main.querySelector<HTMLElement>("h1")?.focus()
}

function onLive(msgs: LiveMsg[]) {
  for (const m of msgs) {
    if (m.event === "meter") {
      const old = fleet.meters.get(m.data.meter.meterId)
      if (old) Object.assign(old, m.data.meter)
      else if (m.data.meter.lastSeen) void loadFleet() // a meter registered by its first frame
    } else if (m.event === "alarm") {
      applyAlarm(m.data.alarm)
      if (m.data.alarm.active) announce(`${m.data.alarm.type} alarm on meter ${m.data.alarm.meterId}`)
    } else if (m.event === "resync") void loadFleet().then(() => show())
  }
  if (rendering && rendering.view === current) rendering.held.push(...msgs)
  else current?.onLive?.(msgs)
}

window.addEventListener("hashchange", () => void show())
void show()
connectLive(onLive)
