// Operations: ingest rate, rejected frames by reason, duplicates and dead letters, from the same
// counters as /metrics (GET /dashboard/ops); rates are differences of two reads. Below them, the
// fleet's rollouts (rollouts.ts).
import { api, type OpsFigures } from "./api.js"
import { h } from "./dom.js"
import { rolloutsPanel } from "./rollouts.js"
import type { View } from "./view.js"

export const OPS_POLL_MS = 2000
/** Rates are over the reads of the last minute (or fewer, just after opening). */
const RATE_WINDOW_MS = 60_000

const sum = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0)
const fmt = (n: number, digits = 0) => n.toLocaleString("en", { maximumFractionDigits: digits })

/**
 * A rate as people read it: per second, or per minute when per second would round to 0 (a demo's
 * few meters, a quiet night); "…" until two reads.
 */
export function rateText(perS: number | undefined): string {
  if (perS === undefined) return "…"
  return perS >= 0.05 || perS === 0 ? `${fmt(perS, 1)} per second` : `${fmt(perS * 60, 1)} per minute`
}

export function opsView(): View {
  let timer: number | undefined
  let reads: OpsFigures[] = []
  let box: HTMLElement
  const rollouts = rolloutsPanel()

  const draw = (f: OpsFigures) => {
    reads = [...reads, f].filter((r) => Date.parse(f.at) - Date.parse(r.at) <= RATE_WINDOW_MS)
    const first = reads[0]
    const dt = (Date.parse(f.at) - Date.parse(first.at)) / 1000
    const rate = (pick: (r: OpsFigures) => number) =>
      rateText(dt > 0 ? Math.max(0, pick(f) - pick(first)) / dt : undefined)
    const tile = (label: string, value: string, id: string) =>
      h("div", { class: "tile", id }, h("p", { class: "tile-label" }, label), h("p", { class: "tile-value" }, value))
    const rejected = Object.entries(f.rejected).sort((a, b) => b[1] - a[1])
    box.replaceChildren(
      h(
        "div",
        { class: "tiles" },
        tile(
          "Frames stored",
          rate((r) => sum(r.framesStored)),
          "ops-frame-rate",
        ),
        tile(
          "Readings stored",
          rate((r) => r.readingsStored),
          "ops-reading-rate",
        ),
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
