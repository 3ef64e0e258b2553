// Operations: ingest rate, rejected frames by reason, duplicates and dead letters, from the same
// counters as /metrics (GET /dashboard/ops); rates are differences of two reads. Below them, the
// fleet's rollouts (rollouts.ts).
import { api, type OpsFigures } from "./api.js"
import { h } from "./dom.js"
import { rolloutsPanel } from "./rollouts.js"
import type { View } from "./view.js"

export const OPS_POLL_MS = 2000

const sum = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0)
const fmt = (n: number, digits = 0) => n.toLocaleString("en", { maximumFractionDigits: digits })

export function opsView(): View {
  let timer: number | undefined
  let prev: OpsFigures | undefined
  let box: HTMLElement
  const rollouts = rolloutsPanel()

  const draw = (f: OpsFigures) => {
    const dt = prev ? (Date.parse(f.at) - Date.parse(prev.at)) / 1000 : 0
    const rate = (now: number, before: number) => (prev && dt > 0 ? fmt(Math.max(0, now - before) / dt, 1) : "…")
    const tile = (label: string, value: string, id: string) =>
      h("div", { class: "tile", id }, h("p", { class: "tile-label" }, label), h("p", { class: "tile-value" }, value))
    const rejected = Object.entries(f.rejected).sort((a, b) => b[1] - a[1])
    box.replaceChildren(
      h(
        "div",
        { class: "tiles" },
        tile(
          "Frames stored per second",
          rate(sum(f.framesStored), prev ? sum(prev.framesStored) : 0),
          "ops-frame-rate",
        ),
        tile("Readings stored per second", rate(f.readingsStored, prev?.readingsStored ?? 0), "ops-reading-rate"),
        tile("Frames received", fmt(sum(f.framesReceived)), "ops-received"),
        tile("Rejected frames", fmt(sum(f.rejected)), "ops-rejected"),
        tile("Duplicates (acked, not stored twice)", fmt(f.duplicates), "ops-duplicates"),
        tile("Dead letters kept", fmt(f.deadLetters), "ops-dead-letters"),
        tile("Meters online", fmt(f.onlineMeters), "ops-online"),
        tile("Ingest", f.stalled ? `stalled (${fmt(f.oldestUnackedS, 1)} s)` : "flowing", "ops-ingest"),
      ),
      h("h2", {}, "Rejected frames by reason"),
      h(
        "table",
        { id: "ops-rejections" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Reason"), h("th", { scope: "col" }, "Frames"))),
        h(
          "tbody",
          {},
          rejected.length
            ? rejected.map(([reason, n]) =>
                h("tr", {}, h("th", { scope: "row" }, reason), h("td", { class: "num" }, fmt(n))),
              )
            : h("tr", {}, h("td", { colspan: 2 }, "None since the bridge started.")),
        ),
      ),
      h(
        "p",
        { class: "note" },
        `Counters since this bridge started, read every ${OPS_POLL_MS / 1000} s; the same figures as `,
        h("a", { href: "metrics" }, "/metrics"),
        ". Dead letters: ",
        h("a", { href: "docs#/dead-letters" }, "GET /dead-letters"),
        " (ops token).",
      ),
    )
    prev = f
  }

  const poll = async () => {
    try {
      draw(await api.ops())
    } finally {
      timer = window.setTimeout(() => void poll(), OPS_POLL_MS)
    }
  }

  return {
    title: "Operations",
    async render(main) {
      box = h("div")
      main.append(h("h1", { tabindex: "-1" }, "Operations"), box, rollouts.el)
      await Promise.all([poll(), rollouts.start()])
    },
    destroy() {
      clearTimeout(timer)
      rollouts.stop()
    },
  }
}
