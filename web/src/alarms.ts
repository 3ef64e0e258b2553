// Alarms across the fleet: open alarms first, then the history (newest first). Acknowledging an
// edge with a note needs the write token; the bridge records who and when, and the list shows it.
import { api, ApiFailure, type Alarm } from "./api.js"
import { announce, h, labelled, when } from "./dom.js"
import type { LiveMsg } from "./live.js"
import type { View } from "./view.js"
import { session } from "./session.js"
import { fleet, setOpen } from "./state.js"

export const HISTORY_DAYS = 30
const HISTORY_ROWS = 500

const key = (a: { meterId: string; boot: number; seq: number }) => `${a.meterId}/${a.boot}/${a.seq}`

export function alarmsView(): View {
  let open: Alarm[] = []
  let history: Alarm[] = []
  let openBody: HTMLTableSectionElement
  let historyBody: HTMLTableSectionElement
  let formBox: HTMLElement
  let reload: number | undefined

  const load = async () => {
    const from = new Date(Date.now() - HISTORY_DAYS * 86400_000).toISOString()
    ;[open, history] = await Promise.all([api.openAlarms(), api.alarms({ from })])
    history = history.reverse().slice(0, HISTORY_ROWS)
    open.reverse()
    setOpen(open)
  }

  const ackCell = (a: Alarm) =>
    a.ack
      ? h("span", { class: "acked" }, `${a.ack.by}, ${when(a.ack.at)}`, a.ack.note ? h("br") : null, a.ack.note || null)
      : h(
          "button",
          { type: "button", class: "ack", "data-alarm": key(a), onclick: () => showForm(a) },
          "Acknowledge",
          h("span", { class: "visually-hidden" }, ` ${a.type} on ${a.meterId}`),
        )

  const row = (a: Alarm) =>
    h(
      "tr",
      { "data-alarm": key(a), class: a.active ? "raised" : "cleared" },
      h("td", {}, h("time", { datetime: a.ts }, when(a.ts))),
      h("th", { scope: "row" }, h("a", { href: `#/meter/${encodeURIComponent(a.meterId)}` }, a.meterId)),
      h("td", {}, a.type.replace(/^ALARM_TYPE_/, "")),
      h("td", {}, a.active ? "raised" : "cleared"),
      h("td", { class: "num" }, a.value),
      h("td", {}, a.source),
      h("td", {}, fleet.meters.get(a.meterId)?.location?.district ?? "—"),
      h("td", {}, ackCell(a)),
    )

  const draw = () => {
    openBody.replaceChildren(...open.map(row))
    if (!open.length) openBody.append(h("tr", {}, h("td", { colspan: 8 }, "No open alarms.")))
    historyBody.replaceChildren(...history.map(row))
  }

  const showForm = (a: Alarm) => {
    const by = h("input", { type: "text", required: true, autocomplete: "name", value: session.by })
    const note = h("textarea", { rows: 3 })
    const token = h("input", { type: "password", autocomplete: "off", value: session.token })
    const error = h("p", { class: "error", role: "alert" })
    const form = h(
      "form",
      { class: "ack-form", "aria-labelledby": "ack-title" },
      h("h2", { id: "ack-title", tabindex: "-1" }, `Acknowledge ${a.type.replace(/^ALARM_TYPE_/, "")} on ${a.meterId}`),
      h("p", {}, `${a.active ? "Raised" : "Cleared"} ${when(a.ts)}.`),
      labelled("Your name", by),
      labelled("Note", note),
      labelled("Write token", token),
      error,
      h(
        "div",
        { class: "buttons" },
        h("button", { type: "submit" }, "Record acknowledgement"),
        h("button", { type: "button", onclick: () => formBox.replaceChildren() }, "Cancel"),
      ),
    )
    form.addEventListener("submit", async (e) => {
      e.preventDefault()
      error.textContent = ""
      try {
        const r = await api.ack(a, by.value, note.value, token.value)
        session.by = by.value
        session.token = token.value
        a.ack = r.ack
        for (const x of [...open, ...history]) if (key(x) === key(a)) x.ack = r.ack
        formBox.replaceChildren()
        draw()
        announce(`Acknowledged ${a.type} on ${a.meterId}`)
      } catch (err) {
        error.textContent =
          err instanceof ApiFailure && err.status === 401
            ? `Refused: ${err.message}. Enter the write token.`
            : `Failed: ${(err as Error).message}`
      }
    })
    formBox.replaceChildren(form)
    form.querySelector<HTMLElement>("h2")?.focus()
  }

  return {
    title: "Alarms",
    async render(main) {
      // made before the first await: a live alarm arriving while the view loads draws into them
      openBody = h("tbody")
      historyBody = h("tbody")
      formBox = h("div", { id: "ack-box" })
      await load()
      const head = () =>
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ...["Time", "Meter", "Alarm", "Edge", "Value", "Source", "District", "Acknowledged"].map((c) =>
              h("th", { scope: "col" }, c),
            ),
          ),
        )
      main.append(
        h("h1", { tabindex: "-1" }, "Alarms"),
        formBox,
        h("h2", {}, "Open"),
        h(
          "div",
          { class: "scroll" },
          h(
            "table",
            { id: "open-alarms" },
            h("caption", { class: "visually-hidden" }, "Open alarms"),
            head(),
            openBody,
          ),
        ),
        h("h2", {}, `History (last ${HISTORY_DAYS} days, newest first, at most ${HISTORY_ROWS})`),
        h(
          "div",
          { class: "scroll" },
          h(
            "table",
            { id: "alarm-history" },
            h("caption", { class: "visually-hidden" }, "Alarm history"),
            head(),
            historyBody,
          ),
        ),
      )
      draw()
    },
    onLive(msgs: LiveMsg[]) {
      let changed = false
      for (const m of msgs) {
        if (m.event === "alarm") {
          const a = m.data.alarm
          if (a.source === "bridge") {
            // bridge alarms' keys are the data tier's: reload
            clearTimeout(reload)
            reload = window.setTimeout(() => void load().then(draw), 300)
            continue
          }
          history.unshift(a)
          history.length = Math.min(history.length, HISTORY_ROWS)
          open = open.filter((x) => !(x.meterId === a.meterId && x.type === a.type))
          if (a.active) open.unshift(a)
          changed = true
        } else if (m.event === "ack") {
          for (const x of [...open, ...history]) if (key(x) === key(m.data.key)) x.ack = m.data.ack
          changed = true
        }
      }
      if (changed) draw()
    },
    destroy() {
      clearTimeout(reload)
    },
  }
}
