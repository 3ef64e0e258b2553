// Small inline-SVG charts of a district (dma.ts): the water balance per day as bars, the minimum
// night flow per night as points on a line. No chart library: a few dozen elements, each period
// one element a test or a screen reader's table can count (the tables beside them carry the figures).
import type { BalanceRow, DmaNight } from "./api.js"
import { svg, uid } from "./dom.js"

const W = 800
const H = 260
const M = { left: 64, right: 12, top: 20, bottom: 36 }

/** Round tick steps (1, 2 or 5 × 10^k) giving about `n` ticks over [lo, hi]. */
function ticks(lo: number, hi: number, n = 5): number[] {
  const span = hi - lo || 1
  const raw = span / n
  const p = 10 ** Math.floor(Math.log10(raw))
  const step = [1, 2, 5, 10].map((k) => k * p).find((s) => s >= raw)!
  const out: number[] = []
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)))
  return out
}

const text = (attrs: Record<string, string | number>, s: string) => {
  const t = svg("text", attrs)
  t.textContent = s
  return t
}

/** The frame of a chart: title, y axis with its ticks and unit, x labels; returns the y scale. */
function frame(title: string, lo: number, hi: number, unit: string, labels: string[], slot: number) {
  const y = (v: number) => M.top + ((hi - v) / (hi - lo || 1)) * (H - M.top - M.bottom)
  const id = uid("chart-title")
  const t = svg("title", { id })
  t.textContent = title
  const parts: SVGElement[] = [t]
  for (const v of ticks(lo, hi)) {
    parts.push(svg("line", { x1: M.left, x2: W - M.right, y1: y(v).toFixed(1), y2: y(v).toFixed(1), class: "tick" }))
    parts.push(text({ x: M.left - 6, y: (y(v) + 4).toFixed(1), class: "tick-label y" }, String(v)))
  }
  parts.push(text({ x: 4, y: M.top - 6, class: "unit" }, unit))
  // at most about 12 labels under the x axis
  const every = Math.max(1, Math.ceil(labels.length / 12))
  labels.forEach((l, i) => {
    if (i % every === 0)
      parts.push(text({ x: (M.left + (i + 0.5) * slot).toFixed(1), y: H - M.bottom + 18, class: "tick-label x" }, l))
  })
  if (lo < 0) parts.push(svg("line", { x1: M.left, x2: W - M.right, y1: y(0), y2: y(0), class: "zero" }))
  return { y, id, parts }
}

const m3 = (ml: number) => ml / 1e6

/**
 * The balance per period as bars: billed metered consumption from zero, the water losses from
 * there to the system input (hatched; below the billed top when the input is less than billed),
 * the system input as a line across the bar. A provisional period is shaded over its whole
 * height and marked "P".
 */
export function balanceChart(rows: BalanceRow[], label: (r: BalanceRow) => string): SVGSVGElement {
  const slot = (W - M.left - M.right) / Math.max(1, rows.length)
  let [lo, hi] = [0, 0]
  for (const r of rows) {
    lo = Math.min(lo, m3(r.billedMl), m3(r.systemInputMl))
    hi = Math.max(hi, m3(r.billedMl), m3(r.systemInputMl))
  }
  if (hi === lo) hi = lo + 1
  const { y, id, parts } = frame(
    `Water balance per day: billed consumption, losses and system input, m³; ${rows.filter((r) => r.provisional).length} of ${rows.length} days provisional`,
    lo,
    hi,
    "m³",
    rows.map(label),
    slot,
  )
  const bars = rows.map((r, i) => {
    const x0 = M.left + i * slot
    const bw = slot * 0.7
    const bx = x0 + (slot - bw) / 2
    const billed = m3(r.billedMl)
    const input = m3(r.systemInputMl)
    const rect = (a: number, b: number, cls: string) =>
      svg("rect", {
        x: bx.toFixed(1),
        width: bw.toFixed(1),
        y: y(Math.max(a, b)).toFixed(1),
        height: Math.max(0.5, Math.abs(y(a) - y(b))).toFixed(1),
        class: cls,
      })
    const tip = svg("title")
    tip.textContent =
      `${label(r)}: input ${input.toFixed(3)} m³, billed ${billed.toFixed(3)} m³, losses ${m3(r.lossesMl).toFixed(3)} m³` +
      (r.provisional ? `, provisional (coverage ${(r.coverage * 100).toFixed(1)} %)` : "")
    const g = svg("g", { class: `period${r.provisional ? " provisional" : ""}`, "data-start": r.start }, tip)
    if (r.provisional) {
      g.append(
        svg("rect", {
          x: x0.toFixed(1),
          width: slot.toFixed(1),
          y: M.top,
          height: H - M.top - M.bottom,
          class: "provisional-band",
        }),
      )
      g.append(text({ x: (x0 + slot / 2).toFixed(1), y: M.top - 6, class: "provisional-mark" }, "P"))
    }
    g.append(rect(0, billed, "bar billed"))
    g.append(rect(billed, input, `bar losses${input < billed ? " negative" : ""}`))
    g.append(
      svg("line", { x1: bx.toFixed(1), x2: (bx + bw).toFixed(1), y1: y(input), y2: y(input), class: "input-line" }),
    )
    return g
  })
  return svg(
    "svg",
    { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": id, class: "chart-svg balance" },
    defs(),
    ...parts,
    ...bars,
  ) as SVGSVGElement
}

/** The minimum night flow (L/h) per night as points joined by a line; an incomplete night is a hollow point. */
export function nightFlowChart(nights: DmaNight[]): SVGSVGElement {
  const slot = (W - M.left - M.right) / Math.max(1, nights.length)
  const lh = (n: DmaNight) => (n.minInputMlPerH === null ? null : n.minInputMlPerH / 1000)
  const vals = nights.map(lh).filter((v): v is number => v !== null)
  const lo = Math.min(0, ...vals)
  let hi = Math.max(0, ...vals)
  if (hi === lo) hi = lo + 1
  const { y, id, parts } = frame(
    `Minimum night flow per night, L/h; ${nights.filter((n) => !n.complete).length} of ${nights.length} nights incomplete`,
    lo,
    hi,
    "L/h",
    nights.map((n) => n.night.slice(5)),
    slot,
  )
  const pts: SVGElement[] = []
  const line: string[] = []
  nights.forEach((n, i) => {
    const v = lh(n)
    if (v === null) return
    const cx = (M.left + (i + 0.5) * slot).toFixed(1)
    const cy = y(v).toFixed(1)
    line.push(`${cx},${cy}`)
    const c = svg("circle", { cx, cy, r: 4, class: `point${n.complete ? "" : " incomplete"}`, "data-night": n.night })
    const tip = svg("title")
    tip.textContent = `${n.night}: ${v.toFixed(3)} L/h${n.complete ? "" : ` (incomplete: ${n.hours} h with data)`}`
    c.append(tip)
    pts.push(c)
  })
  return svg(
    "svg",
    { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": id, class: "chart-svg night-flow" },
    ...parts,
    svg("polyline", { points: line.join(" "), class: "trend" }),
    ...pts,
  ) as SVGSVGElement
}

/** The hatch patterns of losses and provisional periods. */
function defs() {
  const hatch = (pid: string, cls: string) =>
    svg(
      "pattern",
      { id: pid, width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
      svg("rect", { width: 6, height: 6, class: `${cls}-bg` }),
      svg("line", { x1: 0, y1: 0, x2: 0, y2: 6, class: `${cls}-stroke` }),
    )
  return svg("defs", {}, hatch("hatch-losses", "hatch-losses"), hatch("hatch-provisional", "hatch-provisional"))
}
