// The DMA balance as CSV (issue 25 item 7): GET /dmas/:id/balance?format=csv and
// GET /balances?format=csv answer a header row and one row per period (and DMA) whose cells are
// the JSON route's values, a provisional period and a null share included; bounded like the JSON
// route (MAX_PERIODS); the format documented in the OpenAPI description. On both stacks.
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { BALANCE_CSV_COLUMNS, MAX_PERIODS } from "../../bridge/src/routes/dmas.js"
import { insertReadings } from "../../testkit/store-writes.js"
import { hours, type Flow } from "../store-contract-dmas.js"
import { STACKS, startStack, uid, type TestStack } from "../helpers.js"

const OPS = "dma-csv-ops"
const HOUR = 3_600_000
const DAY = 24 * HOUR
const D1 = Date.parse("2035-05-01T00:00:00Z")
const LEAK = 333

/** CSV text → rows of cells (no field of the export needs quoting). */
const parse = (text: string) =>
  text
    .split("\r\n")
    .filter(Boolean)
    .map((l) => l.split(","))

/** A cell as the JSON route gives the value: "" is null, true/false booleans, numbers parsed. */
const value = (col: string, cell: string): unknown =>
  cell === ""
    ? null
    : col === "dmaId" || col === "start"
      ? cell
      : col === "provisional"
        ? cell === "true"
          ? true
          : cell === "false"
            ? false
            : cell
        : Number(cell)

describe.each(STACKS)("DMA balance as CSV: %s", (kind) => {
  let svc: TestStack
  const id = uid("csv").replace(/[^A-Za-z0-9-]/g, "")
  const empty = `${id}-empty`
  const customers: Flow[] = [1, 2].map((i) => ({
    meterId: uid("cc"),
    fwd: (t: number) => i * 11 * ((t / HOUR) % 24 >= 6 ? 9 : 1),
    total: 0,
    seq: 1,
  }))
  const inflow: Flow = {
    meterId: uid("cin"),
    fwd: (t) => customers.reduce((s, c) => s + c.fwd(t), 0) + LEAK,
    total: 0,
    seq: 1,
  }
  const get = (url: string) => svc.app.inject({ url })

  beforeAll(async () => {
    svc = await startStack(kind, { httpPort: 0, apiTokens: { ops: OPS } })
    for (const f of [...customers, inflow]) await svc.store.registerMeter(f.meterId, new Date(D1))
    const headers = { authorization: `Bearer ${OPS}` }
    for (const [dmaId, body] of [
      [id, { name: "CSV", inflow: [inflow.meterId], customers: customers.map((c) => c.meterId) }],
      [empty, { name: "no meters", parentId: id }],
    ] as const) {
      const put = await svc.app.inject({ method: "PUT", url: `/dmas/${dmaId}`, payload: body, headers })
      expect(put.statusCode, put.body).toBe(201)
    }
    for (const f of [...customers, inflow]) {
      // the first customer's last hour of day 3 is missing: that day stays provisional
      const rows = hours(f, D1, D1 + 3 * DAY)
      const kept = f === customers[0] ? rows.slice(0, -1) : rows
      const claim = await insertReadings(svc.store, { meterId: f.meterId, boot: 1, seq: f.seq++ }, kept, new Date())
      expect(claim.kind).toBe("stored")
    }
  }, 180_000)
  afterAll(async () => {
    await svc?.stop()
  })

  test("a DMA's balance as CSV: the header, then one row per day equal to the JSON route's", async () => {
    const q = "bucket=day&from=2035-05-01&to=2035-05-04"
    const json = (await get(`/dmas/${id}/balance?${q}`)).json() as { balance: Record<string, unknown>[] }
    const res = await get(`/dmas/${id}/balance?${q}&format=csv`)
    expect(res.statusCode, res.body).toBe(200)
    expect(res.headers["content-type"]).toMatch(/^text\/csv/)
    expect(res.headers["content-disposition"]).toBe(`attachment; filename="${id}-balance-day.csv"`)
    expect(res.body.endsWith("\r\n")).toBe(true)
    const [header, ...rows] = parse(res.body)
    expect(header).toEqual([
      "dmaId",
      "start",
      "inflowMl",
      "outflowMl",
      "systemInputMl",
      "billedMl",
      "lossesMl",
      "nrwShare",
      "meters",
      "completeMeters",
      "coverage",
      "provisional",
    ])
    expect(rows).toHaveLength(3)
    expect(json.balance).toHaveLength(3)
    rows.forEach((row, i) => {
      const fromCsv = Object.fromEntries(header.map((c, j) => [c, value(c, row[j])]))
      const j: Record<string, unknown> = { dmaId: id, ...json.balance[i] }
      for (const c of BALANCE_CSV_COLUMNS)
        if (c === "nrwShare" || c === "coverage") expect(fromCsv[c] as number, c).toBeCloseTo(j[c] as number, 9)
        else expect(fromCsv[c], c).toEqual(j[c])
    })
    // what the seeded days are: two final days with the leak as losses, the third provisional
    expect(rows.map((r) => [r[1], r[6], r[11]])).toEqual([
      ["2035-05-01T00:00:00.000Z", String(24 * LEAK), "false"],
      ["2035-05-02T00:00:00.000Z", String(24 * LEAK), "false"],
      ["2035-05-03T00:00:00.000Z", String(24 * LEAK + customers[0].fwd(D1 + 3 * DAY - HOUR)), "true"],
    ])
    // stable formatting: plain decimals, no exponent, no thousands separator
    for (const r of rows) for (const c of r.slice(2, -1)) expect(c).toMatch(/^(-?\d+(\.\d{1,9})?)?$/)
    expect(rows[2][10]).toBe("0.666666667")
  })

  test("every DMA's balance as CSV: one row per DMA and period; a null share is an empty cell", async () => {
    const q = "bucket=month&from=2035-05-01&to=2035-06-01"
    const json = (await get(`/balances?${q}`)).json() as { balances: Record<string, unknown>[] }
    const res = await get(`/balances?${q}&format=csv`)
    expect(res.statusCode, res.body).toBe(200)
    const [header, ...rows] = parse(res.body)
    expect(header).toEqual([...BALANCE_CSV_COLUMNS])
    const mine = rows.filter((r) => r[0] === id || r[0] === empty)
    expect(mine.map((r) => r[0])).toEqual([id, empty])
    expect(rows).toHaveLength(json.balances.length)
    const e = mine[1]
    expect(e[header.indexOf("nrwShare")]).toBe("")
    expect(json.balances.find((b) => b.dmaId === empty)!.nrwShare).toBeNull()
    expect(e[header.indexOf("lossesMl")]).toBe("0")
  })

  test("bounded like the JSON route; the format is in the OpenAPI description", async () => {
    const from = new Date(D1).toISOString()
    const tooFar = new Date(D1 + (MAX_PERIODS + 1) * HOUR).toISOString()
    for (const f of ["", "&format=csv"]) {
      const res = await get(`/dmas/${id}/balance?bucket=hour&from=${from}&to=${tooFar}${f}`)
      expect(res.statusCode).toBe(400)
      expect(res.json()).toMatchObject({ error: "CM_ERR_BAD_QUERY" })
    }
    expect((await get(`/dmas/${id}/balance?bucket=day&from=2035-05-01&to=2035-05-02&format=xml`)).statusCode).toBe(400)
    const api = (await get("/openapi.json")).json() as {
      paths: Record<
        string,
        { get: { description: string; parameters: { name: string; schema: { enum?: string[] } }[] } }
      >
    }
    for (const p of ["/dmas/{id}/balance", "/balances"]) {
      const format = api.paths[p].get.parameters.find((x) => x.name === "format")
      expect(format?.schema.enum).toEqual(["json", "csv"])
      expect(api.paths[p].get.description).toMatch(/format=csv/)
    }
  })
})
