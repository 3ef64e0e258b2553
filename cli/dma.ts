// `citymeter dma`: the district metered areas of the bridge's network model (issue 25 item 1),
// through its routes (bridge/src/routes/dmas.ts): put, list, show (with its balance), delete.
// A refusal by the bridge is one line, `<status> <code> <message>`, exit 1; what the CLI can tell is
// wrong before sending anything (a boundary that is not a polygon, a bad window) is a usage error, exit 2.
import { readFileSync } from "node:fs"
import type { Command } from "commander"
import { boundaryError } from "../bridge/src/dma/geojson.js"
import type { Print } from "./build.js"
import { usage } from "./errors.js"
import type { BridgeTarget } from "./provision.js"
import { bridgeCall, intIn, metersOf, requiredBridge, withBridge } from "./rollout.js"

export interface Dma {
  dmaId: string
  name: string
  parentId: string | null
  boundary: unknown
  inflow: string[]
  outflow: string[]
  customers: string[]
  nightFlow: Record<string, unknown>
  members?: { meterId: string; role: string; source: string }[]
}

export interface BalanceRow {
  start: string
  systemInputMl: number
  billedMl: number
  lossesMl: number
  nrwShare: number | null
  coverage: number
  provisional: boolean
}

export interface LossFinding {
  meterId: string
  kind: string
  from: string
  to: string
  evidence: Record<string, unknown>
}

export interface PressureAnswer {
  avgPa: number | null
  meters: number
  buckets: { start: string; avgPa: number | null; meters: number }[]
  ili: { carlLPerDay: number; uarlLPerDay: number; ili: number; pressureM: number; provisional: boolean } | null
}

export const dmaApi = (t: BridgeTarget) => ({
  put: (id: string, body: object) => bridgeCall<Dma>(t, "PUT", `dmas/${encodeURIComponent(id)}`, body),
  list: () => bridgeCall<{ dmas: Dma[] }>(t, "GET", "dmas"),
  get: (id: string) => bridgeCall<Dma>(t, "GET", `dmas/${encodeURIComponent(id)}`),
  remove: (id: string) => bridgeCall<{ deleted: boolean }>(t, "DELETE", `dmas/${encodeURIComponent(id)}`),
  balance: (id: string, q: URLSearchParams) =>
    bridgeCall<{ balance: BalanceRow[] }>(t, "GET", `dmas/${encodeURIComponent(id)}/balance?${q}`),
  losses: (id: string, q: URLSearchParams) =>
    bridgeCall<{ findings: LossFinding[] }>(t, "GET", `dmas/${encodeURIComponent(id)}/apparent-losses?${q}`),
  pressure: (id: string, q: URLSearchParams) =>
    bridgeCall<PressureAnswer>(t, "GET", `dmas/${encodeURIComponent(id)}/pressure?${q}`),
})

/**
 * The boundary in a GeoJSON file: a geometry, a Feature, or a FeatureCollection of one Feature,
 * checked as the bridge checks it.
 */
export function boundaryOf(text: string, file: string): unknown {
  let g: unknown
  try {
    g = JSON.parse(text)
  } catch (e) {
    throw usage(`--boundary ${file} is not JSON: ${(e as Error).message}`)
  }
  const o = g as { type?: string; geometry?: unknown; features?: { geometry?: unknown }[] }
  if (o?.type === "FeatureCollection") {
    if (o.features?.length !== 1) throw usage(`--boundary ${file}: a FeatureCollection of exactly one Feature`)
    g = o.features[0].geometry
  } else if (o?.type === "Feature") g = o.geometry
  const why = boundaryError(g)
  if (why) throw usage(`--boundary ${file}: ${why}`)
  return g
}

interface PutOptions {
  name?: string
  parent?: string
  boundary?: string
  inflow?: string[]
  outflow?: string[]
  customers?: string[]
  window?: string
  tz?: string
  baselineNights?: string
  riseMlPerH?: string
  risePct?: string
  customerNights?: string
  mainsKm?: string
  connections?: string
  serviceLengthM?: string
}

/** A non-negative decimal number option. */
function amount(name: string, v: string, max: number): number {
  const n = Number(v)
  if (!/^\d+(\.\d+)?$/.test(v.trim()) || n > max) throw usage(`${name} must be a number in 0..${max}`)
  return n
}

/** The PUT /dmas/:id body of `dma put`'s options; every mistake is a usage error. */
export function putBody(o: PutOptions, read = (f: string) => readFileSync(f, "utf8")) {
  if (!o.name) throw usage("dma put needs --name <name>")
  if (o.window !== undefined && !/^([01][0-9]|2[0-3]):00-([01][0-9]|2[0-3]):00$/.test(o.window))
    throw usage(`--window must be HH:00-HH:00, whole local hours (got '${o.window}')`)
  const nightFlow = {
    ...(o.window !== undefined ? { window: o.window } : {}),
    ...(o.tz !== undefined ? { tz: o.tz } : {}),
    ...(o.baselineNights !== undefined ? { baselineNights: intIn("--baseline-nights", o.baselineNights, 1, 60) } : {}),
    ...(o.riseMlPerH !== undefined ? { riseMlPerH: intIn("--rise-ml-per-h", o.riseMlPerH, 0, 1e12) } : {}),
    ...(o.risePct !== undefined ? { risePct: intIn("--rise-pct", o.risePct, 0, 10000) } : {}),
    ...(o.customerNights !== undefined ? { customerNights: intIn("--customer-nights", o.customerNights, 1, 60) } : {}),
  }
  return {
    name: o.name,
    ...(o.parent !== undefined ? { parentId: o.parent } : {}),
    ...(o.boundary !== undefined ? { boundary: boundaryOf(read(o.boundary), o.boundary) } : {}),
    ...(o.inflow ? { inflow: metersOf(o.inflow) } : {}),
    ...(o.outflow ? { outflow: metersOf(o.outflow) } : {}),
    ...(o.customers ? { customers: metersOf(o.customers) } : {}),
    ...(Object.keys(nightFlow).length ? { nightFlow } : {}),
    ...(o.mainsKm !== undefined ? { mainsKm: amount("--mains-km", o.mainsKm, 1e6) } : {}),
    ...(o.connections !== undefined ? { connections: intIn("--connections", o.connections, 0, 1e8) } : {}),
    ...(o.serviceLengthM !== undefined
      ? { avgServiceLengthM: amount("--service-length-m", o.serviceLengthM, 10_000) }
      : {}),
  }
}

const litres = (ml: number) => (ml / 1000).toFixed(1)

/** `show`: the DMA, its meters per role, and its balance when asked for. */
export function describeDma(d: Dma): string[] {
  const by = (role: string) => d.members?.filter((m) => m.role === role).length ?? 0
  const nf = d.nightFlow
  return [
    `${d.dmaId}: ${d.name}${d.parentId ? ` (in ${d.parentId})` : ""}`,
    `  inflow: ${d.inflow.join(", ") || "none"}`,
    `  outflow: ${d.outflow.join(", ") || "none"}`,
    `  customers: ${by("customer")} (${d.customers.length} named, the rest by district)`,
    `  boundary: ${d.boundary ? (d.boundary as { type: string }).type : "none"}`,
    `  night flow: ${String(nf.window)} ${String(nf.tz)}, alarm above baseline of ${String(nf.baselineNights)} nights by ` +
      `${String(nf.riseMlPerH)} mL/h and ${String(nf.risePct)} %; customers never at zero for ${String(nf.customerNights)} nights`,
  ]
}

export function balanceTable(rows: BalanceRow[]): string[] {
  const out = ["start                     input L    billed L   losses L   NRW      coverage"]
  for (const r of rows)
    out.push(
      [
        r.start.padEnd(25),
        litres(r.systemInputMl).padStart(10),
        litres(r.billedMl).padStart(10),
        litres(r.lossesMl).padStart(10),
        (r.nrwShare === null ? "-" : `${(r.nrwShare * 100).toFixed(1)}%`).padStart(8),
        `${(r.coverage * 100).toFixed(0)}%${r.provisional ? " provisional" : ""}`.padStart(9),
      ].join(" "),
    )
  return out
}

/** Adds `dma` and its subcommands to the program. */
export function registerDma(program: Command, print: Print) {
  const api = (o: { bridge?: string; token?: string }) => dmaApi(requiredBridge("dma", o))
  const root = program
    .command("dma")
    .description("district metered areas: bulk meters, customers, boundary, balance (the bridge's /dmas)")

  withBridge(root.command("put"), "ops")
    .description("create or replace a DMA (its meters must be registered)")
    .argument("<id>", "the DMA's id; meters whose district is this id are its customers")
    .option("--name <name>", "its name")
    .option("--parent <id>", "the DMA it is a sub-DMA of")
    .option("--boundary <file>", "a GeoJSON Polygon or MultiPolygon (geometry, Feature or one-Feature collection)")
    .option("--inflow <ids...>", "bulk meters feeding it, comma-separated")
    .option("--outflow <ids...>", "bulk meters draining it, comma-separated")
    .option("--customers <ids...>", "customer meters beside its district's, comma-separated")
    .option("--window <HH:00-HH:00>", "the night-flow window, local hours (default 02:00-04:00)")
    .option("--tz <zone>", "the window's IANA time zone (default UTC)")
    .option("--baseline-nights <n>", "nights in the night-flow baseline (default 7)")
    .option("--rise-ml-per-h <n>", "leak onset: mL/h above the baseline (default 50000)")
    .option("--rise-pct <n>", "leak onset: % above the baseline (default 20)")
    .option("--customer-nights <n>", "customer leak: nights never at zero (default 3)")
    .option("--mains-km <km>", "length of mains, for the ILI")
    .option("--connections <n>", "service connections, for the ILI")
    .option("--service-length-m <m>", "mean private pipe between property line and meter (default 0)")
    .addHelpText(
      "after",
      "\nExample:\n  citymeter dma put north --name 'North' --inflow bulk-n1 --outflow bulk-n2 --boundary north.geojson --bridge https://bridge.city.example",
    )
    .action(async (id: string, o: PutOptions & { bridge?: string; token?: string }) => {
      const body = putBody(o)
      const d = await api(o).put(id, body)
      print(
        `stored DMA ${d.dmaId} (${d.inflow.length} inflow, ${d.outflow.length} outflow, ${d.customers.length} named customers)`,
      )
    })

  withBridge(root.command("list"), "read")
    .description("the DMAs: id, name, parent, bulk meters")
    .action(async (o) => {
      for (const d of (await api(o).list()).dmas)
        print(
          `${d.dmaId}\t${d.name}\t${d.parentId ?? "-"}\tin: ${d.inflow.join(",") || "-"}\tout: ${d.outflow.join(",") || "-"}`,
        )
    })

  withBridge(root.command("show"), "read")
    .description("a DMA, its meters per role and, with --bucket, its water balance from --from to --to")
    .argument("<id>", "the DMA's id")
    .option("--bucket <bucket>", "hour, day or month: print the balance")
    .option("--from <time>", "the balance's start (RFC 3339 or YYYY-MM-DD)")
    .option("--to <time>", "its end, exclusive")
    .action(async (id: string, o: { bucket?: string; from?: string; to?: string; bridge?: string; token?: string }) => {
      const a = api(o)
      for (const l of describeDma(await a.get(id))) print(l)
      if (o.bucket === undefined) return
      if (!["hour", "day", "month"].includes(o.bucket)) throw usage("--bucket must be hour, day or month")
      if (!o.from || !o.to) throw usage("--bucket needs --from and --to")
      const rows = await a.balance(id, new URLSearchParams({ bucket: o.bucket, from: o.from, to: o.to }))
      for (const l of balanceTable(rows.balance)) print(l)
    })

  const days = (o: { from?: string; to?: string }, what: string) => {
    if (!o.from || !o.to) throw usage(`dma ${what} needs --from and --to (whole UTC days)`)
    return { from: o.from, to: o.to }
  }
  withBridge(root.command("losses"), "read")
    .description("a DMA's apparent losses from --from to --to: stuck, low-flow, tamper-drop, reverse-flow")
    .argument("<id>", "the DMA's id")
    .option("--from <day>", "the first day (YYYY-MM-DD)")
    .option("--to <day>", "the day after the last")
    .action(async (id: string, o: { from?: string; to?: string; bridge?: string; token?: string }) => {
      const { findings } = await api(o).losses(id, new URLSearchParams(days(o, "losses")))
      if (!findings.length) print("no apparent losses")
      for (const f of findings) print(`${f.meterId}\t${f.kind}\t${f.from}\t${f.to}\t${JSON.stringify(f.evidence)}`)
    })

  withBridge(root.command("pressure"), "read")
    .description("a DMA's average zone pressure per day and its Infrastructure Leakage Index")
    .argument("<id>", "the DMA's id")
    .option("--from <day>", "the first day (YYYY-MM-DD)")
    .option("--to <day>", "the day after the last")
    .action(async (id: string, o: { from?: string; to?: string; bridge?: string; token?: string }) => {
      const p = await api(o).pressure(id, new URLSearchParams(days(o, "pressure")))
      const kpa = (pa: number | null) => (pa === null ? "-" : `${(pa / 1000).toFixed(1)} kPa`)
      for (const b of p.buckets) print(`${b.start}\t${kpa(b.avgPa)}\t${b.meters} meters`)
      print(`average zone pressure: ${kpa(p.avgPa)} over ${p.meters} meters`)
      const i = p.ili
      print(
        i
          ? `ILI ${i.ili.toFixed(2)}: real losses ${i.carlLPerDay.toFixed(0)} L/day (apparent losses not subtracted), ` +
              `unavoidable ${i.uarlLPerDay.toFixed(0)} L/day at ${i.pressureM.toFixed(1)} m${i.provisional ? ", provisional" : ""}`
          : "ILI: needs the DMA's --mains-km and --connections, and pressure readings",
      )
    })

  withBridge(root.command("delete"), "ops")
    .description("delete a DMA (not while it has sub-DMAs)")
    .argument("<id>", "the DMA's id")
    .action(async (id: string, o) => {
      await api(o).remove(id)
      print(`deleted DMA ${id}`)
    })
  return root
}
