// One meter: its status and registers, consumption per 15 min / hour / day / month
// (GET /meters/:id/consumption), flow, pressure min/avg/max, power and voltage per interval
// (GET /meters/:id/readings), its alarm edges on the same time axis, gaps and backfilled data
// marked, and the readings as CSV (the readings route's format=csv).
import uPlot from "uplot"
import { api, type Alarm, type ConsumptionRow, type Meter } from "./api.js"
import { ago, h, labelled, when } from "./dom.js"
import { statusBadge } from "./fleet.js"
import type { LiveMsg } from "./live.js"
import type { View } from "./view.js"
import type { ApiReading } from "./types.js"

const RANGES: Record<string, { label: string; s: number; bucket: string }> = {
  "1h": { label: "Last hour", s: 3600, bucket: "15min" },
  "24h": { label: "Last 24 hours", s: 86400, bucket: "hour" },
  "7d": { label: "Last 7 days", s: 7 * 86400, bucket: "day" },
  "30d": { label: "Last 30 days", s: 30 * 86400, bucket: "day" },
  "365d": { label: "Last 365 days", s: 365 * 86400, bucket: "month" },
}
const BUCKET_LABELS: Record<string, string> = { "15min": "15 minutes", hour: "Hour", day: "Day", month: "Month" }

declare global {
  interface Window {
    /** The charts on the page and the rows they draw, for tests. */
    citymeterCharts?: Record<string, uPlot>
  }
}

type Band = { from: number; to: number; kind: "gap" | "backfill" }

/** Readings in time order, with a null point where an interval is missing, and the bands to mark. */
export function readingSeries(rows: ApiReading[]) {
  const sorted = [...rows].sort((a, b) => a.ts.localeCompare(b.ts))
  const t: number[] = []
  const cols = { flow: [] as (number | null)[], pMin: [], pAvg: [], pMax: [], power: [], volt: [] } as Record<
    string,
    (number | null)[]
  >
  const bands: Band[] = []
  let prevEnd: number | undefined
  for (const r of sorted) {
    const start = Date.parse(r.ts) / 1000
    if (prevEnd !== undefined && start - prevEnd > r.intervalS / 2) {
      // a missing interval: a null point breaks the lines, and the span is marked
      t.push(prevEnd)
      for (const c of Object.values(cols)) c.push(null)
      bands.push({ from: prevEnd, to: start, kind: "gap" })
    }
    if (r.backfill) bands.push({ from: start, to: start + r.intervalS, kind: "backfill" })
    t.push(start)
    cols.flow.push(r.volumeMl === null ? null : r.volumeMl / 1000 / (r.intervalS / 60))
    cols.pMin.push(r.pressureMinPa === null ? null : r.pressureMinPa / 1000)
    cols.pAvg.push(r.pressureAvgPa === null ? null : r.pressureAvgPa / 1000)
    cols.pMax.push(r.pressureMaxPa === null ? null : r.pressureMaxPa / 1000)
    cols.power.push(r.powerW)
    cols.volt.push(r.voltageDv === null ? null : r.voltageDv / 10)
    prevEnd = start + r.intervalS
  }
  return { t, cols, bands, sorted }
}

export function meterView(meterId: string): View {
  const ui = { range: "24h", bucket: "hour" }
  const charts: uPlot[] = []
  let meter: Meter
  let alarms: Alarm[] = []
  let bands: Band[] = []
  let consumption: ConsumptionRow[] = []
  let readings: ApiReading[] = []
  let head: HTMLElement
  let chartBox: HTMLElement
  let tables: HTMLElement
  let csv: HTMLAnchorElement
  let refresh: number | undefined
  let observer: ResizeObserver | undefined

  const range = () => {
    const to = Date.now()
    return { from: new Date(to - RANGES[ui.range].s * 1000).toISOString(), to: new Date(to + 60_000).toISOString() }
  }

  /** Alarm edges as vertical lines, gaps and backfilled spans as bands, drawn under every chart. */
  const marks = (u: uPlot) => {
    const ctx = u.ctx
    const { top, height } = u.bbox
    ctx.save()
    for (const b of bands) {
      const x0 = u.valToPos(b.from, "x", true)
      const x1 = u.valToPos(b.to, "x", true)
      ctx.fillStyle = b.kind === "gap" ? "rgba(120,120,120,0.25)" : "rgba(230,160,0,0.22)"
      ctx.fillRect(x0, top, Math.max(1, x1 - x0), height)
    }
    for (const a of alarms) {
      const x = u.valToPos(Date.parse(a.ts) / 1000, "x", true)
      ctx.strokeStyle = a.active ? "#b00020" : "#1b7a3a"
      ctx.setLineDash(a.active ? [] : [4, 3])
      ctx.lineWidth = 2
      ctx.beginPath()
      ctx.moveTo(x, top)
      ctx.lineTo(x, top + height)
      ctx.stroke()
    }
    ctx.restore()
  }

  const chart = (
    id: string,
    title: string,
    series: uPlot.Series[],
    data: uPlot.AlignedData,
    axes: uPlot.Axis[],
    bars = false,
  ) => {
    const box = h("figure", { class: "chart", id: `${id}-chart` }, h("figcaption", {}, title))
    chartBox.append(box)
    const { from, to } = range()
    const u = new uPlot(
      {
        width: Math.max(280, chartBox.clientWidth - 8),
        height: 220,
        scales: { x: { time: true, range: () => [Date.parse(from) / 1000, Date.parse(to) / 1000] } },
        cursor: { sync: { key: `meter-${meterId}` } },
        series: [
          {},
          ...series.map((s) => (bars ? { ...s, paths: uPlot.paths.bars!({ size: [0.8, 60], align: 1 }) } : s)),
        ],
        axes: [{}, ...axes],
        hooks: { drawClear: [marks] },
      },
      data,
      box,
    )
    u.root.setAttribute("aria-hidden", "true") // the tables below carry the same figures
    charts.push(u)
    window.citymeterCharts = { ...window.citymeterCharts, [id]: u }
  }

  const drawHead = () => {
    const last = readings.length ? [...readings].sort((a, b) => a.ts.localeCompare(b.ts)).at(-1)! : undefined
    const item = (k: string, v: string | Node) => [h("dt", {}, k), h("dd", {}, v)]
    head.replaceChildren(
      h(
        "dl",
        { class: "facts" },
        item("Status", statusBadge(meter)),
        item("Last seen", `${when(meter.lastSeen)} (${ago(meter.lastSeen)})`),
        item("Firmware", meter.firmware ?? "—"),
        item("Board", meter.board ?? "—"),
        item("Boot", String(meter.boot ?? "—")),
        item("Interval", meter.intervalS ? `${meter.intervalS} s × ${meter.batch} per frame` : "—"),
        item("Queue / dropped", `${meter.queued ?? "—"} / ${meter.dropped ?? "—"}`),
        item("Water register", last?.waterTotalMl != null ? `${(last.waterTotalMl / 1e6).toFixed(3)} m³` : "—"),
        item("Energy register", last?.energyTotalWh != null ? `${(last.energyTotalWh / 1000).toFixed(3)} kWh` : "—"),
        item(
          "Location",
          meter.location
            ? `${meter.location.address ?? ""} ${meter.location.district ? `(${meter.location.district})` : ""} ${meter.location.lat.toFixed(5)}, ${meter.location.lon.toFixed(5)}`.trim()
            : "—",
        ),
      ),
    )
  }

  const draw = () => {
    for (const c of charts.splice(0)) c.destroy()
    chartBox.replaceChildren()
    const series = readingSeries(readings)
    bands = [
      ...series.bands,
      ...consumption
        .filter((c) => c.gap)
        .map((c) => ({ from: Date.parse(c.start) / 1000, to: Date.parse(c.start) / 1000 + 1, kind: "gap" as const })),
    ]
    const ct = consumption.map((c) => Date.parse(c.start) / 1000)
    chart(
      "consumption",
      `Consumption per ${BUCKET_LABELS[ui.bucket].toLowerCase()}`,
      [
        { label: "Water (L)", stroke: "#0b5cad", fill: "rgba(11,92,173,0.5)", scale: "L" },
        { label: "Energy (kWh)", stroke: "#7a3e00", fill: "rgba(122,62,0,0.4)", scale: "kWh" },
      ],
      [
        ct,
        consumption.map((c) => (c.waterMl === null ? null : c.waterMl / 1000)),
        consumption.map((c) => (c.energyWh === null ? null : c.energyWh / 1000)),
      ],
      [
        { scale: "L", label: "L" },
        { scale: "kWh", side: 1, label: "kWh", grid: { show: false } },
      ],
      true,
    )
    const c = series.cols
    chart(
      "flow",
      "Flow and pressure per interval",
      [
        { label: "Flow (L/min)", stroke: "#0b5cad", scale: "flow" },
        { label: "Pressure min (kPa)", stroke: "#6a6a6a", dash: [4, 3], scale: "kPa" },
        { label: "Pressure avg (kPa)", stroke: "#2a6f2a", scale: "kPa" },
        { label: "Pressure max (kPa)", stroke: "#6a6a6a", dash: [2, 2], scale: "kPa" },
      ],
      [series.t, c.flow, c.pMin, c.pAvg, c.pMax],
      [
        { scale: "flow", label: "L/min" },
        { scale: "kPa", side: 1, label: "kPa", grid: { show: false } },
      ],
    )
    chart(
      "power",
      "Power and voltage per interval",
      [
        { label: "Power (W)", stroke: "#7a3e00", scale: "W" },
        { label: "Voltage (V)", stroke: "#5b2a86", scale: "V" },
      ],
      [series.t, c.power, c.volt],
      [
        { scale: "W", label: "W" },
        { scale: "V", side: 1, label: "V", grid: { show: false } },
      ],
    )
    chartBox.append(
      h(
        "p",
        { class: "legend" },
        h("span", { class: "key gap" }, "grey band"),
        " a gap (no readings; its consumption lands where data resumes), ",
        h("span", { class: "key backfill" }, "amber band"),
        " backfilled (sent after an outage), ",
        h("span", { class: "key raised" }, "red line"),
        " alarm raised, ",
        h("span", { class: "key cleared" }, "green dashes"),
        " alarm cleared.",
      ),
    )
    const gaps = series.bands.filter((b) => b.kind === "gap").length
    const backfilled = readings.filter((r) => r.backfill).length
    tables.replaceChildren(
      h(
        "p",
        { id: "data-marks" },
        `${readings.length} readings in range; ${gaps} gaps; ${backfilled} backfilled readings; ${consumption.filter((x) => x.gap).length} buckets include a gap's consumption.`,
      ),
      h("h2", {}, "Consumption"),
      h(
        "div",
        { class: "scroll" },
        h(
          "table",
          { id: "consumption-table" },
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ...["Start", "Water (L)", "Energy (kWh)", "Readings", "Gap"].map((x) => h("th", { scope: "col" }, x)),
            ),
          ),
          h(
            "tbody",
            {},
            consumption.map((r) =>
              h(
                "tr",
                { class: r.gap ? "gap" : "" },
                h("th", { scope: "row" }, h("time", { datetime: r.start }, when(r.start))),
                h(
                  "td",
                  { class: "num", "data-ml": r.waterMl ?? "" },
                  r.waterMl === null ? "—" : (r.waterMl / 1000).toFixed(3),
                ),
                h("td", { class: "num" }, r.energyWh === null ? "—" : (r.energyWh / 1000).toFixed(3)),
                h("td", { class: "num" }, r.readings),
                h("td", {}, r.gap ? "includes a gap" : ""),
              ),
            ),
          ),
        ),
      ),
      h("h2", {}, "Alarms in range"),
      h(
        "div",
        { class: "scroll" },
        h(
          "table",
          { id: "meter-alarms" },
          h(
            "thead",
            {},
            h("tr", {}, ...["Time", "Alarm", "Edge", "Value", "Acknowledged"].map((x) => h("th", { scope: "col" }, x))),
          ),
          h(
            "tbody",
            {},
            alarms.length
              ? [...alarms]
                  .reverse()
                  .map((a) =>
                    h(
                      "tr",
                      {},
                      h("th", { scope: "row" }, h("time", { datetime: a.ts }, when(a.ts))),
                      h("td", {}, a.type.replace(/^ALARM_TYPE_/, "")),
                      h("td", {}, a.active ? "raised" : "cleared"),
                      h("td", { class: "num" }, a.value),
                      h("td", {}, a.ack ? `${a.ack.by}, ${when(a.ack.at)}` : "—"),
                    ),
                  )
              : h("tr", {}, h("td", { colspan: 5 }, "No alarms in this range.")),
          ),
        ),
      ),
    )
  }

  const load = async () => {
    const r = range()
    ;[meter, consumption, readings, alarms] = await Promise.all([
      api.meter(meterId),
      api.consumption(meterId, { bucket: ui.bucket, ...r }),
      api.readings(meterId, r),
      api.meterAlarms(meterId, r),
    ])
    csv.href = api.readingsCsvUrl(meterId, r)
    drawHead()
    draw()
  }

  return {
    title: `Meter ${meterId}`,
    async render(main) {
      const rangeSel = h(
        "select",
        {},
        ...Object.entries(RANGES).map(([k, v]) => h("option", { value: k, selected: k === ui.range }, v.label)),
      )
      const bucketSel = h(
        "select",
        {},
        ...Object.entries(BUCKET_LABELS).map(([k, v]) => h("option", { value: k, selected: k === ui.bucket }, v)),
      )
      rangeSel.addEventListener("change", () => {
        ui.range = rangeSel.value
        ui.bucket = bucketSel.value = RANGES[ui.range].bucket
        void load()
      })
      bucketSel.addEventListener("change", () => {
        ui.bucket = bucketSel.value
        void load()
      })
      head = h("div")
      chartBox = h("div", { class: "charts" })
      tables = h("div")
      csv = h("a", { class: "button", download: `${meterId}-readings.csv`, href: "#" }, "Export readings (CSV)")
      main.append(
        h("p", {}, h("a", { href: "#/fleet" }, "← Fleet")),
        h("h1", { tabindex: "-1" }, `Meter ${meterId}`),
        head,
        h(
          "div",
          { class: "filters" },
          labelled("Range", rangeSel),
          labelled("Consumption per", bucketSel),
          h("div", { class: "field" }, csv),
        ),
        chartBox,
        tables,
      )
      await load()
      observer = new ResizeObserver(() => {
        for (const c of charts) c.setSize({ width: Math.max(280, chartBox.clientWidth - 8), height: 220 })
      })
      observer.observe(chartBox)
    },
    onLive(msgs: LiveMsg[]) {
      const mine = msgs.some(
        (m) =>
          (m.event === "reading" && m.data.meterId === meterId) ||
          (m.event === "alarm" && m.data.alarm.meterId === meterId) ||
          (m.event === "meter" && m.data.meter.meterId === meterId) ||
          (m.event === "ack" && m.data.key.meterId === meterId),
      )
      if (!mine) return
      clearTimeout(refresh)
      refresh = window.setTimeout(() => void load(), 300)
    },
    destroy() {
      clearTimeout(refresh)
      observer?.disconnect()
      for (const c of charts.splice(0)) c.destroy()
    },
  }
}
