// One district (DMA, issue 25): its water balance per day over the last N days (bars, provisional
// days marked, a table with the same figures, CSV), its minimum night flow per night with the
// night-flow alarm's state, its boundary and meters on a plan (plan.ts, no online tiles), and its
// apparent losses where the bridge lists them (GET /dmas/:id/apparent-losses).
import { api, type ApparentLoss, type BalanceRow, type DmaDetail, type DmaNight, type DmaPressure } from "./api.js"
import { balanceChart, nightFlowChart } from "./charts.js"
import { h, labelled, svg, when } from "./dom.js"
import { fmtM3, fmtPct, nightAlarm } from "./dmas.js"
import type { LiveMsg } from "./live.js"
import { fit, grid, H, W } from "./plan.js"
import { fleet } from "./state.js"
import type { View } from "./view.js"

const DAY = 86_400_000
const RANGES: Record<string, string> = {
  "7": "Last 7 days",
  "14": "Last 14 days",
  "30": "Last 30 days",
  "90": "Last 90 days",
}
const ROLES = { inflow: "inflow", outflow: "outflow", customer: "customer" } as const

/** Kept across visits. */
const ui = { days: "14" }

const th = (...cols: string[]) =>
  h(
    "thead",
    {},
    h(
      "tr",
      {},
      cols.map((c) => h("th", { scope: "col" }, c)),
    ),
  )

/** The district's plan: its boundary's rings as paths, its placed meters as dots by role. */
function dmaPlan(d: DmaDetail) {
  const rings: number[][][] = !d.boundary
    ? []
    : d.boundary.type === "Polygon"
      ? d.boundary.coordinates
      : d.boundary.coordinates.flat()
  const placed = d.members.filter((m) => fleet.meters.get(m.meterId)?.location)
  const positions = [
    ...rings.flat().map(([lon, lat]) => [lon, lat] as const),
    ...placed.map((m) => {
      const l = fleet.meters.get(m.meterId)!.location!
      return [l.lon, l.lat] as const
    }),
  ]
  if (!positions.length)
    return h("p", { id: "dma-map-none" }, "This district has no boundary and none of its meters has a location.")
  const { x, y } = fit(positions)
  const title = svg("title", { id: "dma-map-title" })
  title.textContent =
    `Plan of district ${d.name}: ${d.boundary ? "its boundary and " : "no boundary; "}` +
    `${placed.length} of its ${d.members.length} meters placed`
  const path = rings
    .map((r) => r.map(([lon, lat], i) => `${i ? "L" : "M"}${x(lon).toFixed(1)} ${y(lat).toFixed(1)}`).join(" ") + " Z")
    .join(" ")
  const dots = placed.map((m) => {
    const l = fleet.meters.get(m.meterId)!.location!
    const c = svg("circle", {
      cx: x(l.lon).toFixed(1),
      cy: y(l.lat).toFixed(1),
      r: m.role === "customer" ? 4 : 7,
      class: `dot ${ROLES[m.role]}`,
      "data-meter": m.meterId,
      "data-role": m.role,
    })
    const tip = svg("title")
    tip.textContent = `${m.meterId} (${m.role})`
    c.append(tip)
    return c
  })
  const map = svg(
    "svg",
    { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "dma-map-title", class: "plan", id: "dma-map" },
    title,
    ...grid(),
    ...(path ? [svg("path", { d: path, class: "boundary", "fill-rule": "evenodd" })] : []),
    ...dots,
  )
  map.addEventListener("click", (e) => {
    const id = (e.target as Element).getAttribute("data-meter")
    if (id) location.hash = `#/meter/${encodeURIComponent(id)}`
  })
  return h(
    "div",
    {},
    map,
    h(
      "p",
      { class: "legend" },
      h("span", { class: "key boundary" }, "outlined area"),
      " the boundary, ",
      h("span", { class: "key inflow" }, "large blue dots"),
      " inflow meters, ",
      h("span", { class: "key outflow" }, "large purple dots"),
      " outflow meters, ",
      h("span", { class: "key customer" }, "small green dots"),
      ` customer meters. ${d.members.length - placed.length} of the district's meters have no location.`,
    ),
  )
}

/** The range's average zone pressure and the ILI (GET /dmas/:id/pressure), or why there is none. */
function pressureFacts(p: DmaPressure) {
  const ili = p.ili
  return h(
    "dl",
    { class: "facts", id: "pressure" },
    h("dt", {}, "Average zone pressure"),
    h(
      "dd",
      { id: "pressure-avg" },
      p.avgPa === null
        ? "no pressure readings in this range"
        : `${(p.avgPa / 1000).toFixed(1)} kPa (${(p.avgPa / 9806.65).toFixed(1)} m head) from ${p.meters} customer meters`,
    ),
    h("dt", {}, "Infrastructure Leakage Index"),
    h(
      "dd",
      { id: "pressure-ili" },
      ili === null || ili.ili === null
        ? "not computed: it needs the mains length and connections, pressure readings and system input"
        : `${ili.ili.toFixed(2)}: real losses ${Math.round(ili.carlLPerDay ?? 0)} L/day against ${Math.round(ili.uarlLPerDay ?? 0)} L/day unavoidable` +
            (ili.apparentLossesSubtracted ? "" : " (apparent losses not subtracted: an upper bound)") +
            (ili.provisional ? ", provisional" : ""),
    ),
  )
}

export function dmaView(dmaId: string): View {
  let dma: DmaDetail
  let balance: BalanceRow[] = []
  let nights: DmaNight[] = []
  let nightInfo = { window: "", tz: "" }
  let findings: ApparentLoss[] | undefined
  let pressure: DmaPressure
  let body: HTMLElement
  let csv: HTMLAnchorElement
  let refresh: number | undefined

  const range = () => {
    const to = Math.floor(Date.now() / DAY) * DAY + DAY // through today (UTC), provisional while it runs
    return { from: new Date(to - Number(ui.days) * DAY).toISOString(), to: new Date(to).toISOString() }
  }

  const alarmState = () => {
    const a = nightAlarm(dmaId)
    return a
      ? h(
          "p",
          { id: "night-alarm", class: "alarm-state raised" },
          `Night-flow alarm raised ${when(a.ts)}: minimum night input ${(a.value / 1000).toFixed(3)} L/h, above the baseline of the nights before.`,
        )
      : h("p", { id: "night-alarm", class: "alarm-state" }, "No night-flow alarm open.")
  }

  const draw = () => {
    const day = (r: BalanceRow) => r.start.slice(5, 10)
    const customerAlarms = dma.members.filter((m) =>
      fleet.open.get(m.meterId)?.some((a) => a.type === "CUSTOMER_NIGHT_FLOW"),
    )
    const provisional = balance.filter((r) => r.provisional).length
    body.replaceChildren(
      h("h2", { id: "balance-heading" }, "Water balance per day"),
      h(
        "figure",
        { class: "chart", id: "balance-chart" },
        h(
          "figcaption",
          {},
          `Billed consumption, losses and system input per UTC day, m³; ${provisional} of ${balance.length} days provisional.`,
        ),
        balanceChart(balance, day),
      ),
      h(
        "p",
        { class: "legend" },
        h("span", { class: "key billed" }, "blue bar"),
        " billed metered consumption, ",
        h("span", { class: "key losses" }, "red hatching"),
        " water losses (up to the system input, the black line), ",
        h("span", { class: "key provisional" }, "grey band, P"),
        " provisional: not every meter's intervals of that day are stored yet.",
      ),
      h(
        "div",
        { class: "scroll" },
        h(
          "table",
          { id: "balance-table", "aria-describedby": "balance-heading" },
          h("caption", { class: "visually-hidden" }, `Water balance of district ${dma.name} per UTC day`),
          th(
            "Day (UTC)",
            "System input (m³)",
            "Billed (m³)",
            "Losses (m³)",
            "Non-revenue water",
            "Coverage",
            "Meters complete",
            "Balance",
          ),
          h(
            "tbody",
            {},
            balance.map((r) =>
              h(
                "tr",
                { class: r.provisional ? "provisional" : "", "data-start": r.start },
                h("th", { scope: "row" }, h("time", { datetime: r.start }, r.start.slice(0, 10))),
                h("td", { class: "num" }, fmtM3(r.systemInputMl)),
                h("td", { class: "num" }, fmtM3(r.billedMl)),
                h("td", { class: "num" }, fmtM3(r.lossesMl)),
                h("td", { class: "num" }, fmtPct(r.nrwShare)),
                h("td", { class: "num" }, fmtPct(r.coverage)),
                h("td", { class: "num" }, `${r.completeMeters} of ${r.meters}`),
                h("td", {}, r.provisional ? h("span", { class: "badge provisional" }, "provisional") : "final"),
              ),
            ),
          ),
        ),
      ),
      h("h2", {}, "Minimum night flow"),
      alarmState(),
      h(
        "p",
        { id: "customer-night-alarms" },
        customerAlarms.length
          ? `Customer meters that never reach zero at night (a leak on the customer's side): ${customerAlarms.map((m) => m.meterId).join(", ")}.`
          : "No customer meter with an open night-flow alarm.",
      ),
      h(
        "figure",
        { class: "chart", id: "night-chart" },
        h(
          "figcaption",
          {},
          `The lowest hourly system input in the window ${nightInfo.window} (${nightInfo.tz}) per night, L/h; a hollow point is a night with hours missing.`,
        ),
        nightFlowChart(nights),
      ),
      h(
        "div",
        { class: "scroll" },
        h(
          "table",
          { id: "night-table" },
          h("caption", { class: "visually-hidden" }, `Minimum night flow of district ${dma.name} per night`),
          th("Night", "Minimum input (L/h)", "At", "Customers then (L)", "Hours with data", "Complete"),
          h(
            "tbody",
            {},
            nights.map((n) =>
              h(
                "tr",
                { class: n.complete ? "" : "provisional" },
                h("th", { scope: "row" }, n.night),
                h("td", { class: "num" }, n.minInputMlPerH === null ? "—" : (n.minInputMlPerH / 1000).toFixed(3)),
                h("td", {}, n.at ? when(n.at) : "—"),
                h("td", { class: "num" }, n.customersMl === null ? "—" : (n.customersMl / 1000).toFixed(3)),
                h("td", { class: "num" }, n.hours),
                h("td", {}, n.complete ? "yes" : "no"),
              ),
            ),
          ),
        ),
      ),
      h("h2", {}, "Pressure and leakage index"),
      pressureFacts(pressure),
      h("h2", {}, "Map"),
      dmaPlan(dma),
      ...(findings === undefined
        ? []
        : [
            h("h2", {}, "Apparent losses"),
            h(
              "div",
              { class: "scroll" },
              h(
                "table",
                { id: "losses-table" },
                h("caption", { class: "visually-hidden" }, `Apparent losses in district ${dma.name}`),
                th("Meter", "Kind", "From", "To", "Evidence"),
                h(
                  "tbody",
                  {},
                  findings.length
                    ? findings.map((f) =>
                        h(
                          "tr",
                          { "data-meter": f.meterId, "data-kind": f.kind },
                          h(
                            "th",
                            { scope: "row" },
                            h("a", { href: `#/meter/${encodeURIComponent(f.meterId)}` }, f.meterId),
                          ),
                          h("td", {}, f.kind),
                          h("td", {}, h("time", { datetime: f.from }, when(f.from))),
                          h("td", {}, h("time", { datetime: f.to }, when(f.to))),
                          h(
                            "td",
                            { class: "evidence" },
                            Object.entries(f.evidence)
                              .map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(", ") : String(v)}`)
                              .join("; "),
                          ),
                        ),
                      )
                    : h("tr", {}, h("td", { colspan: 5 }, "No apparent losses found in this range.")),
                ),
              ),
            ),
          ]),
    )
  }

  const load = async () => {
    const r = range()
    // apparent losses and night flow cover at most 92 days; the ranges offered stay within that
    ;[dma, balance, { nights, ...nightInfo }, findings, pressure] = await Promise.all([
      api.dma(dmaId),
      api.balance(dmaId, { bucket: "day", ...r }),
      api.nightFlow(dmaId, r),
      api.apparentLosses(dmaId, r),
      api.pressure(dmaId, r),
    ])
    csv.href = api.balanceCsvUrl(dmaId, { bucket: "day", ...r })
    draw()
  }

  return {
    title: `District ${dmaId}`,
    async render(main) {
      const sel = h(
        "select",
        {},
        Object.entries(RANGES).map(([k, v]) => h("option", { value: k, selected: k === ui.days }, v)),
      )
      sel.addEventListener("change", () => {
        ui.days = sel.value
        void load()
      })
      csv = h("a", { class: "button", download: `${dmaId}-balance.csv`, href: "#" }, "Export balance (CSV)")
      body = h("div")
      const facts = h("dl", { class: "facts" })
      const heading = h("h1", { tabindex: "-1" }, `District ${dmaId}`)
      main.append(
        h("p", {}, h("a", { href: "#/dmas" }, "← Districts")),
        heading,
        facts,
        h("div", { class: "filters" }, labelled("Range", sel), h("div", { class: "field" }, csv)),
        body,
      )
      await load()
      heading.textContent = `District ${dma.name} (${dma.dmaId})`
      const n = (role: string) => dma.members.filter((m) => m.role === role).length
      const item = (k: string, v: string | Node) => [h("dt", {}, k), h("dd", {}, v)]
      facts.append(
        ...item(
          "Parent district",
          dma.parentId ? h("a", { href: `#/dma/${encodeURIComponent(dma.parentId)}` }, dma.parentId) : "—",
        ),
        ...item("Inflow meters", dma.inflow.join(", ") || "—"),
        ...item("Outflow meters", dma.outflow.join(", ") || "—"),
        ...item("Customer meters", String(n("customer"))),
        ...item("Night window", `${dma.nightFlow.window} (${dma.nightFlow.tz})`),
      )
    },
    onLive(msgs: LiveMsg[]) {
      const ids = new Set([`dma:${dmaId}`, ...(dma?.members.map((m) => m.meterId) ?? [])])
      const mine = msgs.some(
        (m) =>
          (m.event === "alarm" && ids.has(m.data.alarm.meterId)) || (m.event === "reading" && ids.has(m.data.meterId)),
      )
      if (!mine) return
      // at most one reload every 5 s, whatever the members' reading rate
      refresh ??= window.setTimeout(() => {
        refresh = undefined
        void load()
      }, 5000)
    },
    destroy() {
      clearTimeout(refresh)
    },
  }
}
