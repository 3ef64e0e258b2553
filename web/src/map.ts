// Where meters are: a plan of the city drawn from the meters' own coordinates (plan.ts: no online
// tiles, the bridge may have no internet), coloured by status, and the fleet grouped by district with
// its open alarms and the last day's consumption (GET /districts).
import { api } from "./api.js"
import { h, svg } from "./dom.js"
import type { LiveMsg } from "./live.js"
import type { View } from "./view.js"
import { fit, grid, H, W } from "./plan.js"
import { fleet, openCount, statusOf } from "./state.js"

export function mapView(): View {
  let plan: HTMLElement
  const draw = () => {
    const placed = [...fleet.meters.values()].filter((m) => m.location)
    if (!placed.length) {
      plan.replaceChildren(
        h(
          "p",
          {},
          "No meter has a location yet: set one with `citymeter provision --lat … --lon …` or PUT /meters/:id/location.",
        ),
      )
      return
    }
    const { x, y } = fit(placed.map((m) => [m.location!.lon, m.location!.lat] as const))
    const districts = new Map<string, { sx: number; sy: number; n: number }>()
    const dots: SVGElement[] = []
    for (const m of placed) {
      const { lat, lon, district } = m.location!
      const cx = x(lon)
      const cy = y(lat)
      const d = district ?? "—"
      const acc = districts.get(d) ?? { sx: 0, sy: 0, n: 0 }
      districts.set(d, { sx: acc.sx + cx, sy: acc.sy + cy, n: acc.n + 1 })
      const alarm = openCount(m.meterId) > 0
      dots.push(
        svg("circle", {
          cx: cx.toFixed(1),
          cy: cy.toFixed(1),
          r: alarm ? 6 : 4,
          class: `dot ${statusOf(m)}${alarm ? " alarm" : ""}`,
          "data-meter": m.meterId,
        }),
      )
    }
    const labels = [...districts].map(([d, a]) => {
      const t = svg("text", { x: (a.sx / a.n).toFixed(1), y: (a.sy / a.n - 10).toFixed(1), class: "district-label" })
      t.textContent = d
      return t
    })
    const title = svg("title")
    title.textContent = `City plan: ${placed.length} meters in ${districts.size} districts; red rings are meters with open alarms`
    const map = svg(
      "svg",
      { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "plan-title", class: "plan" },
      title,
      ...grid(),
      ...dots,
      ...labels,
    )
    title.setAttribute("id", "plan-title")
    map.addEventListener("click", (e) => {
      const id = (e.target as Element).getAttribute("data-meter")
      if (id) location.hash = `#/meter/${encodeURIComponent(id)}`
    })
    plan.replaceChildren(
      map,
      h(
        "p",
        { class: "legend" },
        h("span", { class: "badge online" }, "online"),
        " ",
        h("span", { class: "badge offline" }, "offline"),
        " ",
        h("span", { class: "badge inactive" }, "inactive"),
        " — a larger dot has open alarms. ",
        `${fleet.meters.size - placed.length} meters have no location.`,
      ),
    )
  }
  return {
    title: "City plan",
    async render(main) {
      plan = h("div", { class: "plan-box" })
      const from = new Date(Date.now() - 86400_000).toISOString()
      const districts = await api.districts({ from })
      main.append(
        h("h1", { tabindex: "-1" }, "City plan"),
        plan,
        h("h2", {}, "By district (consumption over the last 24 hours)"),
        h(
          "div",
          { class: "scroll" },
          h(
            "table",
            { id: "districts" },
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                ...["District", "Meters", "Online", "Open alarms", "Water (L)", "Energy (kWh)"].map((c) =>
                  h("th", { scope: "col" }, c),
                ),
              ),
            ),
            h(
              "tbody",
              {},
              districts.map((d) =>
                h(
                  "tr",
                  {},
                  h("th", { scope: "row" }, d.district ?? "(no district)"),
                  h("td", { class: "num" }, d.meters),
                  h("td", { class: "num" }, d.online),
                  h("td", { class: "num" }, d.openAlarms),
                  h("td", { class: "num" }, (d.waterMl / 1000).toLocaleString("en", { maximumFractionDigits: 1 })),
                  h("td", { class: "num" }, (d.energyWh / 1000).toLocaleString("en", { maximumFractionDigits: 2 })),
                ),
              ),
            ),
          ),
        ),
      )
      draw()
    },
    onLive(msgs: LiveMsg[]) {
      if (msgs.some((m) => m.event === "alarm" || m.event === "meter")) draw()
    },
  }
}
