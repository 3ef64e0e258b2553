// The districts (DMAs, issue 25): each with its water balance of the last whole UTC day
// (GET /balances: system input, billed, losses, NRW share, coverage, provisional) and whether its
// night-flow alarm is open, linking to the district's own view (dma.ts); the balances as CSV.
import { api, type BalanceRow, type Dma } from "./api.js"
import { h } from "./dom.js"
import type { LiveMsg } from "./live.js"
import { fleet } from "./state.js"
import type { View } from "./view.js"

const DAY = 86_400_000

/** The open NIGHT_FLOW_RISE alarm of a DMA (the bridge raises it on meter id dma:<id>). */
export const nightAlarm = (dmaId: string) => fleet.open.get(`dma:${dmaId}`)?.find((a) => a.type === "NIGHT_FLOW_RISE")

export const fmtM3 = (ml: number) => (ml / 1e6).toFixed(3)
export const fmtPct = (share: number | null) => (share === null ? "—" : `${(share * 100).toFixed(1)} %`)

export function dmasView(): View {
  let body: HTMLTableSectionElement
  let dmas: Dma[] = []
  let latest = new Map<string, BalanceRow>()

  const draw = () => {
    body.replaceChildren(
      ...(dmas.length
        ? dmas.map((d) => {
            const b = latest.get(d.dmaId)
            const alarm = nightAlarm(d.dmaId)
            return h(
              "tr",
              { "data-dma": d.dmaId, class: b?.provisional ? "provisional" : "" },
              h("th", { scope: "row" }, h("a", { href: `#/dma/${encodeURIComponent(d.dmaId)}` }, d.name)),
              h("td", {}, d.dmaId),
              h("td", { class: "num" }, b ? fmtM3(b.systemInputMl) : "—"),
              h("td", { class: "num" }, b ? fmtM3(b.billedMl) : "—"),
              h("td", { class: "num" }, b ? fmtM3(b.lossesMl) : "—"),
              h("td", { class: "num" }, b ? fmtPct(b.nrwShare) : "—"),
              h("td", { class: "num" }, b ? fmtPct(b.coverage) : "—"),
              h(
                "td",
                {},
                b ? (b.provisional ? h("span", { class: "badge provisional" }, "provisional") : "final") : "—",
              ),
              h("td", {}, alarm ? h("span", { class: "alarm-count" }, "raised") : "none open"),
            )
          })
        : [
            h(
              "tr",
              {},
              h("td", { colspan: 9 }, "No district metered areas yet: PUT /dmas/:id or `citymeter dma put`."),
            ),
          ]),
    )
  }

  return {
    title: "Districts",
    async render(main) {
      const to = new Date(Math.floor(Date.now() / DAY) * DAY)
      const q = { bucket: "day", from: new Date(to.getTime() - DAY).toISOString(), to: to.toISOString() }
      const [list, rows] = await Promise.all([api.dmas(), api.balances(q)])
      dmas = list
      latest = new Map(rows.map((r) => [r.dmaId!, r]))
      body = h("tbody")
      main.append(
        h("h1", { tabindex: "-1" }, "Districts"),
        h(
          "p",
          {},
          "District metered areas: what their inflow meters delivered against what their customers' meters recorded. ",
          h("a", { class: "button", href: api.balanceCsvUrl(undefined, q), download: "balances.csv" }, "Export (CSV)"),
        ),
        h(
          "div",
          { class: "scroll" },
          h(
            "table",
            { id: "dmas-table" },
            h("caption", {}, `Water balance of ${q.from.slice(0, 10)} (the last whole UTC day), in m³`),
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                ...[
                  "District",
                  "Id",
                  "System input (m³)",
                  "Billed (m³)",
                  "Losses (m³)",
                  "Non-revenue water",
                  "Coverage",
                  "Balance",
                  "Night-flow alarm",
                ].map((c) => h("th", { scope: "col" }, c)),
              ),
            ),
            body,
          ),
        ),
        h(
          "p",
          { class: "note" },
          "A provisional balance has meters whose intervals of the day are not all stored yet (coverage under 100 %); " +
            "late frames change it.",
        ),
      )
      draw()
    },
    onLive(msgs: LiveMsg[]) {
      if (msgs.some((m) => m.event === "alarm" && m.data.alarm.meterId.startsWith("dma:"))) draw()
    },
  }
}
