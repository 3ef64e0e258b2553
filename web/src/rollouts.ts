// The Rollouts panel of the operations view (issue 23): each rollout with its state, stage, a bar of
// its meters that have ended (done, rolled back, failed or skipped), its meters per state and why it
// halted; choosing one lists its meters with their state and the share of the image written. Read
// from GET /rollouts every 2 s while the page is visible. Rollouts need a token with the read
// scope even where reads are open data: the tab's token (session.ts), asked for when refused.
import { api, ApiFailure, type Rollout, type RolloutMeter } from "./api.js"
import { announce, h, labelled } from "./dom.js"
import { session } from "./session.js"

export const ROLLOUTS_POLL_MS = 2000
/** Meter states that end a meter's way through a rollout (bridge store/rollouts.ts FINAL_STATES). */
const ENDED = ["done", "rolled_back", "failed", "skipped"]

export const endedOf = (r: Rollout) => ENDED.reduce((n, s) => n + (r.counts[s] ?? 0), 0)
const pct = (part: number, whole: number) => (whole > 0 ? Math.floor((part / whole) * 100) : 0)
const countsText = (r: Rollout) =>
  Object.entries(r.counts)
    .filter(([, n]) => n > 0)
    .map(([s, n]) => `${s.replace("_", " ")} ${n}`)
    .join(", ") || "no meters"
const stageText = (s: Record<string, unknown>) =>
  s.kind === "canary"
    ? `canary ${+(Number(s.share) * 100).toFixed(2)}%`
    : s.kind === "district"
      ? `district ${s.district}`
      : "all"

export function rolloutsPanel() {
  let timer: number | undefined
  let stopped = false
  let selected: number | undefined
  let rollouts: Rollout[] = []
  let detail: { id: number; size: number; meters: RolloutMeter[] } | undefined
  const seenState = new Map<number, string>()

  const body = h("tbody")
  const error = h("p", { class: "error", role: "alert" })
  const tokenBox = h("div")
  const detailBox = h("section", { id: "rollout-meters", "aria-live": "off" })
  const table = h(
    "div",
    { class: "scroll" },
    h(
      "table",
      { id: "rollouts" },
      h("caption", { class: "visually-hidden" }, "Rollouts, newest first"),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ...["Rollout", "Release", "State", "Stage", "Meters ended", "Meters by state", "Reason"].map((c) =>
            h("th", { scope: "col" }, c),
          ),
        ),
      ),
      body,
    ),
  )
  table.hidden = true // until the first read
  const el = h(
    "section",
    { id: "rollouts-panel", "aria-labelledby": "rollouts-title" },
    h("h2", { id: "rollouts-title" }, "Rollouts"),
    tokenBox,
    error,
    table,
    detailBox,
  )

  const askToken = (why: string) => {
    if (tokenBox.firstChild) return
    const input = h("input", { type: "password", autocomplete: "off", value: session.token })
    const form = h(
      "form",
      { class: "token-form" },
      h("p", {}, why),
      labelled("API token (read scope)", input),
      h("div", { class: "buttons" }, h("button", { type: "submit" }, "Show rollouts")),
    )
    form.addEventListener("submit", (e) => {
      e.preventDefault()
      session.token = input.value
      tokenBox.replaceChildren()
      waiting = false
      void poll()
    })
    tokenBox.replaceChildren(form)
  }

  const row = (r: Rollout) => {
    const ended = endedOf(r)
    return h(
      "tr",
      { "data-rollout": r.id, "data-state": r.state, class: r.id === selected ? "selected" : null },
      h(
        "th",
        { scope: "row" },
        h(
          "button",
          {
            type: "button",
            class: "link",
            "data-rollout": r.id,
            "aria-pressed": String(r.id === selected),
            "aria-controls": "rollout-meters",
            onclick: () => select(r.id),
          },
          `#${r.id}`,
          h("span", { class: "visually-hidden" }, ": show its meters"),
        ),
      ),
      h("td", {}, `${r.board} ${r.version}`, h("br"), h("span", { class: "muted" }, `release ${r.releaseId}`)),
      h("td", { class: `rollout-state ${r.state}` }, r.state),
      h("td", { class: "rollout-stage" }, `${r.stage}/${r.stages.length}`, " ", stageText(r.stages[r.stage - 1] ?? {})),
      h(
        "td",
        { class: "rollout-progress" },
        h("progress", {
          max: Math.max(1, r.meters),
          value: ended,
          "aria-label": `Rollout ${r.id}: ${ended} of ${r.meters} meters ended`,
        }),
        h("span", { class: "num" }, ` ${ended}/${r.meters} (${pct(ended, r.meters)}%)`),
      ),
      h("td", { class: "rollout-counts" }, countsText(r)),
      h("td", { class: "rollout-reason" }, r.reason ?? "—"),
    )
  }

  const drawDetail = () => {
    const r = rollouts.find((x) => x.id === selected)
    if (!r || !detail || detail.id !== r.id) return detailBox.replaceChildren()
    const size = detail.size
    detailBox.replaceChildren(
      h("h3", {}, `Meters of rollout ${r.id} (${r.board} ${r.version})`),
      h(
        "div",
        { class: "scroll" },
        h(
          "table",
          { id: "rollout-meter-table" },
          h("caption", { class: "visually-hidden" }, `Meters of rollout ${r.id}`),
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ...["Meter", "Stage", "State", "Written", "Attempts", "Reason"].map((c) => h("th", { scope: "col" }, c)),
            ),
          ),
          h(
            "tbody",
            {},
            detail.meters.length
              ? detail.meters.map((m) =>
                  h(
                    "tr",
                    { "data-meter": m.meterId, "data-state": m.state },
                    h("th", { scope: "row" }, h("a", { href: `#/meter/${encodeURIComponent(m.meterId)}` }, m.meterId)),
                    h("td", { class: "num" }, m.stage),
                    h("td", { class: "meter-state" }, m.state.replace("_", " ")),
                    h("td", { class: "num written" }, `${pct(m.written, m.size ?? size)}%`),
                    h("td", { class: "num" }, m.attempts),
                    h("td", {}, m.reason ?? "—"),
                  ),
                )
              : h("tr", {}, h("td", { colspan: 6 }, "No meters.")),
          ),
        ),
      ),
      ...(detail.meters.length >= 1000 ? [h("p", { class: "note" }, "The first 1000 meters (by id).")] : []),
    )
  }

  const draw = () => {
    table.hidden = false
    // a redraw keeps the focus on the rollout the operator is on
    const focused = (document.activeElement as HTMLElement | null)?.closest?.("#rollouts button")
    const focusId = focused instanceof HTMLElement ? focused.dataset.rollout : undefined
    body.replaceChildren(
      ...(rollouts.length ? rollouts.map(row) : [h("tr", {}, h("td", { colspan: 7 }, "No rollouts yet."))]),
    )
    if (focusId) body.querySelector<HTMLElement>(`button[data-rollout="${focusId}"]`)?.focus()
    drawDetail()
    for (const r of rollouts) {
      const before = seenState.get(r.id)
      if (before && before !== r.state) announce(`Rollout ${r.id} ${r.state}${r.reason ? `: ${r.reason}` : ""}`)
      seenState.set(r.id, r.state)
    }
  }

  const load = async () => {
    const token = session.token
    rollouts = await api.rollouts(token)
    if (selected !== undefined && rollouts.some((r) => r.id === selected))
      detail = { id: selected, ...(await api.rolloutMeters(selected, token)) }
    else detail = undefined
  }

  let polling = false
  let again = false
  /** Refused for the token: no more reads until one is entered. */
  let waiting = false
  /** One read at a time: asked for during one, the next follows it at once. */
  const poll = async () => {
    if (stopped) return
    if (polling) {
      again = true
      return
    }
    polling = true
    clearTimeout(timer)
    try {
      if (!session.token) {
        // asked for first: a request without one would only be refused
        waiting = true
        askToken("Rollouts need an API token with the read scope (read, write or ops).")
      } else if (!document.hidden) {
        // nothing is read while the page is hidden: the next look once it is visible again
        await load()
        error.textContent = ""
        draw()
      }
    } catch (e) {
      if (e instanceof ApiFailure && e.status === 401) {
        waiting = true
        askToken(`The bridge refused the token: ${e.message}.`)
      } else error.textContent = `Rollouts: ${(e as Error).message}`
    } finally {
      polling = false
      if (stopped || waiting) {
        // the view is gone, or a token is needed first
      } else if (again) {
        again = false
        void poll()
      } else timer = window.setTimeout(() => void poll(), ROLLOUTS_POLL_MS)
    }
  }

  const select = (id: number) => {
    selected = selected === id ? undefined : id
    detail = undefined
    draw()
    void poll()
  }

  const onVisible = () => {
    if (!document.hidden && !waiting) void poll()
  }

  return {
    el,
    async start() {
      document.addEventListener("visibilitychange", onVisible)
      await poll()
    },
    stop() {
      stopped = true
      clearTimeout(timer)
      document.removeEventListener("visibilitychange", onVisible)
    },
  }
}
