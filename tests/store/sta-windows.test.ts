// One meter's Observations read month by month (sta/time-windows.ts) give the same answers as the
// whole view, on both engines, over compacted months and hot rows: every order, $skip, $count and
// $filter bound the page reads by window, and the cases it leaves to the whole view. A page that
// its first month fills reads that month alone.
import { randomBytes } from "node:crypto"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { BRIDGE_DEFAULTS } from "../../bridge/src/defaults.js"
import { StaQuery } from "../../bridge/src/sta/query.js"
import { openPglite, openPostgres } from "../../bridge/src/store/engines.js"
import type { Store } from "../../bridge/src/store/store.js"
import { readingRow } from "../../testkit/rows.js"
import { insertReadings, touchMeter } from "../../testkit/store-writes.js"
import { dropSchema, PG_URL } from "../helpers.js"

const T0 = Date.parse("2025-11-20T00:00:00Z")
const STEP = 6 * 3_600_000
/** 2025-11-20 to 2026-02-11: November to January compacted, February hot. */
const READINGS = 330
const BASE = "http://test/sta/v1.1"

async function seed(store: Store, m: string, offset: number) {
  await touchMeter(store, m, new Date(T0))
  for (let k = 0; k < READINGS; k += 10) {
    const rows = Array.from({ length: Math.min(10, READINGS - k) }, (_, idx) =>
      readingRow(m, new Date(T0 + (k + idx) * STEP + offset), {
        seq: k / 10 + 1,
        idx,
        volumeMl: (k + idx) % 7,
        waterTotalMl: 1000 + k + idx,
        // pressure in some months only: a channel's gaps
        pressureAvgPa: (k + idx) % 3 === 0 ? null : 300_000 + k + idx,
      }),
    )
    const outcome = await insertReadings(store, { meterId: m, boot: 1, seq: k / 10 + 1 }, rows, rows[0].ts)
    expect(outcome.kind).toBe("stored")
  }
}

const Q: [string, string][][] = [
  [],
  [["$top", "5"]],
  [
    ["$top", "7"],
    ["$skip", "120"],
  ],
  [
    ["$orderby", "phenomenonTime desc"],
    ["$top", "9"],
    ["$count", "true"],
  ],
  [["$orderby", "phenomenonTime asc"]],
  [
    ["$filter", "phenomenonTime ge 2025-12-31T12:00:00Z and phenomenonTime lt 2026-01-02T00:00:00Z"],
    ["$count", "true"],
  ],
  [["$filter", "phenomenonTime le 2025-12-01T06:00:00Z and (result gt 2 and phenomenonTime gt 2025-11-29T00:00:00Z)"]],
  [["$filter", "phenomenonTime eq 2026-01-15T18:00:00Z"]],
  [["$filter", "phenomenonTime lt 2025-11-21T00:00:00Z or result eq 6"]],
  [["$filter", "not (phenomenonTime lt 2026-01-20T00:00:00Z)"]],
  [["$filter", "phenomenonTime gt 2026-06-01T00:00:00Z"]],
  [
    ["$filter", "result ge 3"],
    ["$orderby", "phenomenonTime desc"],
    ["$skip", "40"],
    ["$top", "30"],
    ["$count", "true"],
  ],
  [
    ["$top", "0"],
    ["$count", "true"],
  ],
  // orders the windows do not serve: the whole view
  [
    ["$orderby", "result desc"],
    ["$top", "4"],
  ],
]
const PATHS = [
  "Datastreams('sw-a:water')/Observations",
  "Datastreams('sw-a:pressure')/Observations",
  "FeaturesOfInterest('sw-a')/Observations",
  "Datastreams('sw-c:water')/Observations",
]

describe.each(["postgres", "pglite"] as const)("%s: Observations by month window", (engine) => {
  let store: Store
  const schema = `t_${randomBytes(6).toString("hex")}`
  beforeAll(async () => {
    store = engine === "postgres" ? await openPostgres(PG_URL, { schema }) : await openPglite(undefined)
    await store.migrate()
    await seed(store, "sw-a", 0)
    await seed(store, "sw-b", 1000) // another meter's readings, interleaved in time
    await touchMeter(store, "sw-c", new Date(T0)) // a meter without readings
    const done = await store.compactReadings(new Date("2026-02-05T00:00:00Z"))
    expect(done.blocks).toBe(6)
  }, 120_000)
  afterAll(async () => {
    await store.close()
    if (engine === "postgres") await dropSchema(schema)
  })

  test("the same answers as the whole view", async () => {
    for (const path of PATHS)
      for (const pairs of Q) {
        const windowed = await new StaQuery(store, BASE).get(path, pairs)
        const whole = await new StaQuery(store, BASE, BRIDGE_DEFAULTS.reads, false).get(path, pairs)
        expect(JSON.stringify(windowed), `${path} ${JSON.stringify(pairs)}`).toBe(JSON.stringify(whole))
      }
    // the answers are not empty by accident
    const all = (await new StaQuery(store, BASE).get(PATHS[0], [["$count", "true"]])).json as { "@iot.count": number }
    expect(all["@iot.count"]).toBe(READINGS)
  })

  test("a page its first month fills reads that month alone", async () => {
    const reads: string[] = []
    const counting = new Proxy(store, {
      get: (t, k) =>
        k === "readView"
          ? (sql: string, params: unknown[]) => (reads.push(sql), t.readView(sql, params))
          : Reflect.get(t, k),
    })
    await new StaQuery(counting, BASE).get(PATHS[0], [["$top", "10"]])
    const pages = reads.filter((s) => s.includes("readings_between"))
    expect(pages).toHaveLength(1)
    reads.length = 0
    // a year's filter, newest first: from February's rows (hot) down, one month read
    await new StaQuery(counting, BASE).get(PATHS[0], [
      ["$filter", "phenomenonTime ge 2025-01-01T00:00:00Z and phenomenonTime lt 2026-12-01T00:00:00Z"],
      ["$orderby", "phenomenonTime desc"],
      ["$top", "10"],
    ])
    expect(reads.filter((s) => s.includes("readings_between"))).toHaveLength(1)
    expect(reads.some((s) => s.includes("readings_all"))).toBe(false)
  })
})
