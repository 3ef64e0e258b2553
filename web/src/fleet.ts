// The fleet: every meter with its status, last seen, firmware, board, boot, open alarms and the
// queue figures of its birth. Search, filters and sorting run over the whole fleet in memory
// (10,000 meters filter and sort in a few ms); only one page of rows is in the document.
import type { Meter } from "./api.js"
import { ago, h, labelled, when } from "./dom.js"
import type { LiveMsg } from "./live.js"
import type { View } from "./view.js"
import { fleet, openCount, statusOf } from "./state.js"

export const PAGE_SIZE = 50

const SORTS: Record<string, { label: string; cmp: (a: Meter, b: Meter) => number }> = {
  id: { label: "Meter id", cmp: (a, b) => (a.meterId < b.meterId ? -1 : a.meterId > b.meterId ? 1 : 0) },
  lastSeen: { label: "Last seen (newest first)", cmp: (a, b) => b.lastSeen.localeCompare(a.lastSeen) },
  alarms: { label: "Open alarms (most first)", cmp: (a, b) => openCount(b.meterId) - openCount(a.meterId) },
  status: { label: "Status", cmp: (a, b) => statusOf(a).localeCompare(statusOf(b)) },
  dropped: { label: "Dropped frames (most first)", cmp: (a, b) => (b.dropped ?? 0) - (a.dropped ?? 0) },
  queued: { label: "Queue length (longest first)", cmp: (a, b) => (b.queued ?? 0) - (a.queued ?? 0) },
}

/** Kept across visits, so going back to the list finds it as it was left. */
const ui = { q: "", status: "all", alarm: "all", sort: "id", page: 0 }

export function statusBadge(m: Meter) {
  const s = statusOf(m)
  return h("span", { class: `badge ${s}` }, s)
}

export function fleetView(): View {
  let table: HTMLTableSectionElement
  let summary: HTMLElement
  let pager: HTMLElement
  let timer: number | undefined
  let redrawTimer: number | undefined

  const filtered = () => {
    const q = ui.q.trim().toLowerCase()
    const rows: Meter[] = []
    for (const m of fleet.meters.values()) {
      if (ui.status !== "all" && statusOf(m) !== ui.status) continue
      const n = openCount(m.meterId)
      if (ui.alarm === "open" && n === 0) continue
      if (ui.alarm === "none" && n > 0) continue
      if (
        q &&
        !m.meterId.toLowerCase().includes(q) &&
        !(m.location?.district ?? "").toLowerCase().includes(q) &&
        !(m.location?.address ?? "").toLowerCase().includes(q) &&
        !(m.board ?? "").toLowerCase().includes(q)
      )
        continue
      rows.push(m)
    }
    return rows.sort(SORTS[ui.sort].cmp)
  }

  const draw = () => {
    const rows = filtered()
    const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE))
    ui.page = Math.min(ui.page, pages - 1)
    const now = Date.now()
    table.replaceChildren(
      ...rows.slice(ui.page * PAGE_SIZE, (ui.page + 1) * PAGE_SIZE).map((m) => {
        const n = openCount(m.meterId)
        return h(
          "tr",
          { "data-meter": m.meterId },
          h("th", { scope: "row" }, h("a", { href: `#/meter/${encodeURIComponent(m.meterId)}` }, m.meterId)),
          h("td", {}, statusBadge(m)),
          h("td", {}, h("time", { datetime: m.lastSeen, title: when(m.lastSeen) }, ago(m.lastSeen, now))),
          h("td", {}, m.firmware ?? "—"),
          h("td", {}, m.board ?? "—"),
          h("td", { class: "num" }, m.boot ?? "—"),
          h(
            "td",
            { class: "num" },
            n
              ? h(
                  "span",
                  {
                    class: "alarm-count",
                    title: fleet.open
                      .get(m.meterId)!
                      .map((a) => a.type)
                      .join(", "),
                  },
                  n,
                )
              : "0",
          ),
          h("td", { class: "num" }, m.queued ?? "—"),
          h("td", { class: "num" }, m.dropped ?? "—"),
          h("td", {}, m.location?.district ?? "—"),
        )
      }),
    )
    const counts = { online: 0, offline: 0, inactive: 0 }
    for (const m of fleet.meters.values()) counts[statusOf(m)]++
    summary.textContent =
      `${fleet.meters.size} meters: ${counts.online} online, ${counts.offline} offline, ${counts.inactive} inactive. ` +
      `${rows.length} match; page ${ui.page + 1} of ${pages}.`
    pager.replaceChildren(
      h("button", { type: "button", onclick: () => go(0), disabled: ui.page === 0 }, "First"),
      h("button", { type: "button", onclick: () => go(ui.page - 1), disabled: ui.page === 0 }, "Previous"),
      h("span", {}, `Page ${ui.page + 1} of ${pages}`),
      h("button", { type: "button", onclick: () => go(ui.page + 1), disabled: ui.page >= pages - 1 }, "Next"),
      h("button", { type: "button", onclick: () => go(pages - 1), disabled: ui.page >= pages - 1 }, "Last"),
    )
  }
  const go = (p: number) => {
    ui.page = Math.max(0, p)
    draw()
  }
  const later = () => {
    clearTimeout(timer)
    timer = window.setTimeout(() => {
      ui.page = 0
      draw()
    }, 120)
  }

  return {
    title: "Fleet",
    render(main) {
      const search = h("input", {
        type: "search",
        value: ui.q,
        autocomplete: "off",
        placeholder: "id, district, address, board",
      })
      search.addEventListener("input", () => {
        ui.q = search.value
        later()
      })
      const select = (value: string, options: [string, string][], on: (v: string) => void) => {
        const s = h("select", {}, ...options.map(([v, l]) => h("option", { value: v, selected: v === value }, l)))
        s.addEventListener("change", () => {
          on(s.value)
          ui.page = 0
          draw()
        })
        return s
      }
      table = h("tbody")
      summary = h("p", { class: "summary", role: "status" })
      pager = h("div", { class: "pager", role: "group", "aria-label": "Pages" })
      main.append(
        h("h1", { tabindex: "-1" }, "Fleet"),
        h(
          "form",
          { class: "filters", role: "search", onsubmit: (e: Event) => e.preventDefault() },
          labelled("Search meters", search),
          labelled(
            "Status",
            select(
              ui.status,
              [
                ["all", "All"],
                ["online", "Online"],
                ["offline", "Offline"],
                ["inactive", "Inactive"],
              ],
              (v) => (ui.status = v),
            ),
          ),
          labelled(
            "Alarms",
            select(
              ui.alarm,
              [
                ["all", "All"],
                ["open", "With open alarms"],
                ["none", "Without open alarms"],
              ],
              (v) => (ui.alarm = v),
            ),
          ),
          labelled(
            "Sort by",
            select(
              ui.sort,
              Object.entries(SORTS).map(([k, s]) => [k, s.label]),
              (v) => (ui.sort = v),
            ),
          ),
        ),
        summary,
        h(
          "div",
          { class: "scroll" },
          h(
            "table",
            { id: "fleet-table" },
            h("caption", { class: "visually-hidden" }, "Meters of the fleet"),
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                ...[
                  "Meter",
                  "Status",
                  "Last seen",
                  "Firmware",
                  "Board",
                  "Boot",
                  "Open alarms",
                  "Queue",
                  "Dropped",
                  "District",
                ].map((c) => h("th", { scope: "col" }, c)),
              ),
            ),
            table,
          ),
        ),
        pager,
      )
      draw()
    },
    onLive(msgs: LiveMsg[]) {
      if (!msgs.some((m) => m.event !== "reading")) return
      // at most one redraw a second whatever the event rate
      redrawTimer ??= window.setTimeout(() => {
        redrawTimer = undefined
        draw()
      }, 250)
    },
    destroy() {
      clearTimeout(timer)
      clearTimeout(redrawTimer)
    },
  }
}
