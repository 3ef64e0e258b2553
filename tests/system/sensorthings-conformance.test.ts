// The SensorThings view against the assertions of the OGC executable test suite for SensorThings
// (ets-sta10: conformance classes A.1 Sensing Core and A.2 Filtering Extension), on both stacks.
// The suite itself is Java, creates its entities with POST and reads ids as numbers; this service
// is read-only with string ids, so this file seeds meters the way meters do (frames over MQTT),
// then makes the same kinds of requests and checks the same things, with the expected counts of
// our own data. Each test is named after the suite's test method; README "Interoperability" lists
// them with their outcome. The bridge registers no meter by itself (autoRegister off): other
// suites publish on the shared Mosquitto, and only our two meters may be Things here.
import mqtt from "mqtt"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { citymeter } from "../../bridge/src/gen/citymeter.js"
import { startService, type Service } from "../../bridge/src/service.js"
import { upTopic } from "../../bridge/src/topics.js"
import { MOSQUITTO_URL, PG_URL, STACKS, captureLog, dropSchema, uid, waitFor } from "../helpers.js"

const { Uplink, Channel } = citymeter.v1
const up = (o: Record<string, unknown>) => Buffer.from(Uplink.encode(Uplink.fromObject(o)).finish())
const DAY = 86400
const T0 = Math.floor(Date.now() / 1000 / DAY) * DAY - 3 * DAY

/** The mandatory properties and relations of each entity type (OGC 18-088 data model). */
const TYPES = {
  Things: { props: ["name", "description"], rels: ["Datastreams", "HistoricalLocations", "Locations"] },
  Locations: { props: ["name", "description", "encodingType", "location"], rels: ["HistoricalLocations", "Things"] },
  HistoricalLocations: { props: ["time"], rels: ["Thing", "Locations"] },
  Datastreams: {
    props: ["name", "description", "unitOfMeasurement", "observationType"],
    rels: ["Thing", "Sensor", "ObservedProperty", "Observations"],
  },
  Sensors: { props: ["name", "description", "encodingType", "metadata"], rels: ["Datastreams"] },
  ObservedProperties: { props: ["name", "definition", "description"], rels: ["Datastreams"] },
  Observations: { props: ["phenomenonTime", "result", "resultTime"], rels: ["Datastream", "FeatureOfInterest"] },
  FeaturesOfInterest: { props: ["name", "description", "encodingType", "feature"], rels: ["Observations"] },
} as const
type SetName = keyof typeof TYPES
const SETS = Object.keys(TYPES) as SetName[]
const TARGET: Record<string, SetName> = {
  Thing: "Things",
  Things: "Things",
  Locations: "Locations",
  HistoricalLocations: "HistoricalLocations",
  Datastream: "Datastreams",
  Datastreams: "Datastreams",
  Sensor: "Sensors",
  ObservedProperty: "ObservedProperties",
  Observations: "Observations",
  FeatureOfInterest: "FeaturesOfInterest",
  Sensors: "Sensors",
  ObservedProperties: "ObservedProperties",
  FeaturesOfInterest: "FeaturesOfInterest",
}
const isPlural = (rel: string) => rel in TYPES
/** Properties whose value is an object: $value answers JSON, $filter and $orderby skip them. */
const OBJECT_PROPS = new Set(["location", "feature", "unitOfMeasurement"])

type Entity = Record<string, unknown> & { "@iot.id": string }
type Body = Record<string, unknown> & { value?: Entity[] }

const key = (id: string) => `('${id.replace(/'/g, "''")}')`

describe.each(STACKS)("SensorThings conformance (ets-sta10 A.1, A.2) on %s", (kind) => {
  let stack: Service
  const schema = `t_${uid("sta").replace(/-/g, "_")}`
  let pub: mqtt.MqttClient
  const water = uid("sta-w")
  const power = uid("sta-e")
  let root: string
  /** Observations expected from the readings API, which does not go through the SensorThings view. */
  let observations = 0
  const total: Record<SetName, number> = {
    Things: 2,
    Locations: 2,
    HistoricalLocations: 2,
    // water, waterTotal, pressure; energy, energyTotal, power, voltage
    Datastreams: 7,
    Sensors: 3,
    ObservedProperties: 5,
    Observations: 0,
    FeaturesOfInterest: 2,
  }

  const raw = (path: string) => stack.app.inject({ url: `/sta/v1.1${path}` })
  const get = async (path: string, status = 200): Promise<Body> => {
    const res = await raw(path)
    expect(res.statusCode, `${path}: ${res.body.slice(0, 300)}`).toBe(status)
    return res.json() as Body
  }
  const list = async (path: string) => {
    const b = await get(path)
    expect(Array.isArray(b.value), path).toBe(true)
    return b.value as Entity[]
  }
  const first = async (set: SetName) => (await list(`/${set}`))[0]["@iot.id"]

  beforeAll(async () => {
    stack = await startService({
      ...(kind === "embedded"
        ? { databaseUrl: "pglite:memory", embeddedMqttPort: 0 }
        : { databaseUrl: PG_URL, storeOptions: { schema }, mqttUrl: MOSQUITTO_URL }),
      demo: true,
      autoRegister: false,
      clientId: uid("sta-bridge"),
      log: captureLog().log,
    })
    for (const m of [water, power]) await stack.store.registerMeter(m, new Date(T0 * 1000))
    pub = await mqtt.connectAsync(stack.mqttUrl, { clientId: uid("sta-pub") })
    const birth = (channels: number[]) =>
      up({ boot: 1, seq: 0, birth: { firmware: "fw-sta 1.0", board: "esp32", intervalS: 900, batch: 3, channels } })
    await pub.publishAsync(upTopic(water, "birth"), birth([Channel.CHANNEL_WATER, Channel.CHANNEL_PRESSURE]), {
      qos: 1,
    })
    await pub.publishAsync(
      upTopic(power, "birth"),
      birth([Channel.CHANNEL_ENERGY, Channel.CHANNEL_POWER, Channel.CHANNEL_VOLTAGE]),
      { qos: 1 },
    )
    for (let seq = 1; seq <= 2; seq++) {
      const startS = T0 + (seq - 1) * 3 * 900
      const base = { boot: 1, seq }
      const w = [2, 5, 3].map((v) => v * seq)
      await pub.publishAsync(
        upTopic(water, "readings"),
        up({
          ...base,
          readings: {
            startS,
            timeSynced: true,
            intervalS: 900,
            water: { totalMl: 1000 * seq, volumeMl: w },
            pressure: { avgPa: [300000, 310000, 290000], belowAvgPa: [0, 0, 0], aboveAvgPa: [0, 0, 0] },
          },
        }),
        { qos: 1 },
      )
      await pub.publishAsync(
        upTopic(power, "readings"),
        up({
          ...base,
          readings: {
            startS,
            timeSynced: true,
            intervalS: 900,
            electricity: {
              totalWh: 500 * seq,
              energyWh: w,
              powerW: w.map((x) => x * 4),
              voltageDv: [2301, 2298, 2310],
            },
          },
        }),
        { qos: 1 },
      )
    }
    await waitFor("readings stored", async () => {
      for (const m of [water, power]) {
        const rows = (await stack.app.inject({ url: `/meters/${m}/readings` })).json().readings as unknown[]
        const meter = (await stack.app.inject({ url: `/meters/${m}` })).json() as { channels?: string[] }
        if (rows.length < 6 || !meter.channels?.length) return false
      }
      return true
    })
    await stack.store.setLocation(water, { lat: 48.137, lon: 11.575, address: "Marienplatz 1", district: "centre" })
    await stack.store.setLocation(power, { lat: 48.15, lon: 11.58, address: null, district: null })
    // the readings API's rows: one Observation per channel value
    for (const m of [water, power]) {
      const rows = (await stack.app.inject({ url: `/meters/${m}/readings` })).json().readings as Record<
        string,
        number | null
      >[]
      for (const r of rows)
        for (const k of [
          "volumeMl",
          "waterTotalMl",
          "energyWh",
          "energyTotalWh",
          "powerW",
          "voltageDv",
          "pressureAvgPa",
        ])
          if (r[k] !== null) observations++
    }
    total.Observations = observations
    root = ((await get("")).value as unknown as { url: string }[])[0].url.replace(/\/Things$/, "")
  })
  afterAll(async () => {
    await pub?.endAsync()
    await stack?.stop()
    if (kind !== "embedded") await dropSchema(schema)
  })

  /** Control information, mandatory properties and navigation links of an entity. */
  const checkEntity = (set: SetName, e: Entity, what: string) => {
    expect(e["@iot.id"], what).toBeDefined()
    expect(e["@iot.selfLink"], what).toBe(`${root}/${set}${key(e["@iot.id"])}`)
    for (const p of TYPES[set].props) expect(e, `${what}: property ${p}`).toHaveProperty([p])
    for (const r of TYPES[set].rels)
      expect(e[`${r}@iot.navigationLink`], `${what}: ${r}@iot.navigationLink`).toBe(
        `${root}/${set}${key(e["@iot.id"])}/${r}`,
      )
  }

  // ---- A.1 Sensing Core ----

  test("A.1 checkServiceRootUri: the service root lists every entity set with its URL", async () => {
    const value = (await get("")).value as unknown as { name: string; url: string }[]
    expect(value.map((v) => v.name).sort()).toEqual([...SETS].sort())
    for (const v of value) expect(v.url).toBe(`${root}/${v.name}`)
  })

  test("A.1 readEntitiesAndCheckResponse: GET each collection; control information, properties, links", async () => {
    for (const set of SETS) {
      const value = await list(`/${set}`)
      expect(value.length, set).toBe(total[set])
      for (const e of value.slice(0, 2)) checkEntity(set, e, set)
    }
  })

  test("A.1 readNonexistentEntity: a missing entity of each set is 404", async () => {
    for (const set of SETS) {
      for (const id of [String(Number.MAX_SAFE_INTEGER), "no-such-meter", `${water}:water:9:9:9`]) {
        const res = await raw(`/${set}${key(id)}`)
        expect(res.statusCode, `${set}(${id})`).toBe(404)
        expect(res.json().error).toBe("CM_ERR_NOT_FOUND")
      }
      expect((await raw(`/${set}(${Number.MAX_SAFE_INTEGER})`)).statusCode).toBe(404)
    }
  })

  test("A.1 readEntityAndCheckResponse: GET one entity of each set by id", async () => {
    for (const set of SETS) {
      const id = await first(set)
      const e = (await get(`/${set}${key(id)}`)) as Entity
      expect(e["@iot.id"]).toBe(id)
      checkEntity(set, e, `${set}(${id})`)
    }
  })

  test("A.1 readPropertyOfEntityAndCheckResponse: a property alone, and its $value", async () => {
    for (const set of SETS) {
      const id = await first(set)
      for (const p of TYPES[set].props) {
        const one = await get(`/${set}${key(id)}/${p}`)
        expect(Object.keys(one), `${set}/${p}`).toEqual([p])
        expect(one[p], `${set}/${p}`).not.toBeUndefined()
        const res = await raw(`/${set}${key(id)}/${p}/$value`)
        expect(res.statusCode, `${set}/${p}/$value`).toBe(200)
        if (OBJECT_PROPS.has(p)) expect(res.body.indexOf("{"), `${set}/${p}/$value`).toBe(0)
        else {
          expect(res.body.includes("{"), `${set}/${p}/$value`).toBe(false)
          expect(res.body).toBe(String(one[p]))
        }
      }
    }
  })

  test("A.1 checkResourcePaths: related entities to four levels, and their $ref links", async () => {
    let requests = 0
    const walk = async (path: string, head: string, depth: number) => {
      const body = await get(path)
      requests++
      const plural = isPlural(head)
      let id: string
      if (plural) {
        expect(body.value?.length, `${path} is empty`).toBeGreaterThan(0)
        id = (body.value as Entity[])[0]["@iot.id"]
      } else id = (body as Entity)["@iot.id"]
      const refs = await get(`${path}/$ref`)
      requests++
      if (plural)
        for (const r of (refs.value as Entity[]).slice(0, 2))
          expect(Object.keys(r), `${path}/$ref`).toEqual(["@iot.selfLink"])
      else expect(Object.keys(refs), `${path}/$ref`).toEqual(["@iot.selfLink"])
      if (depth === 4) return
      const here = plural ? `${path}${key(id)}` : path
      for (const rel of TYPES[TARGET[head]].rels) await walk(`${here}/${rel}`, rel, depth + 1)
    }
    for (const set of SETS) await walk(`/${set}`, set, 1)
    // every path of the data model's relations to depth 4, each read with and without $ref
    const paths = (head: string, depth: number): number =>
      1 + (depth === 4 ? 0 : TYPES[TARGET[head]].rels.reduce((n, r) => n + paths(r, depth + 1), 0))
    expect(requests).toBe(2 * SETS.reduce((n, s) => n + paths(s, 1), 0))
  })

  // ---- A.2 Filtering Extension ----

  /** Every entity of a collection (no paging: our data is small). */
  const all = async (path: string) => list(`${path}${path.includes("?") ? "&" : "?"}$top=10000`)

  /** The plural relations of the first entity of each set: [collection path, its type]. */
  const relatedCollections = async () => {
    const out: [string, SetName][] = []
    for (const set of SETS) {
      const id = await first(set)
      for (const rel of TYPES[set].rels) if (isPlural(rel)) out.push([`/${set}${key(id)}/${rel}`, TARGET[rel]])
    }
    return out
  }
  const collections = async () => [
    ...SETS.map((s) => [`/${s}`, s] as [string, SetName]),
    ...(await relatedCollections()),
  ]

  test("A.2 readEntitiesWithSelectQO: $select returns the selected properties only", async () => {
    const check = async (path: string, set: SetName) => {
      const props = TYPES[set].props
      for (let i = 0; i < props.length; i++)
        for (const selected of [[props[i]], props.slice(0, i + 1)]) {
          const b = await get(`${path}?$select=${selected.join(",")}`)
          const es = (b.value ?? [b]) as Entity[]
          for (const e of es.slice(0, 2)) {
            for (const p of props)
              if (selected.includes(p)) expect(e, `${path} $select=${selected}`).toHaveProperty([p])
              else expect(e, `${path} $select=${selected}`).not.toHaveProperty([p])
            for (const r of TYPES[set].rels) expect(e).not.toHaveProperty([`${r}@iot.navigationLink`])
          }
        }
    }
    for (const set of SETS) {
      await check(`/${set}`, set)
      const id = await first(set)
      for (const rel of TYPES[set].rels) await check(`/${set}${key(id)}/${rel}`, TARGET[rel])
    }
  })

  test("A.2 readEntitiesWithExpandQO: $expand of relations, lists of them, and two levels", async () => {
    const checkExpanded = (set: SetName, e: Entity, expand: string[], what: string) => {
      for (const r of TYPES[set].rels) {
        const paths = expand.filter((x) => x === r || x.startsWith(`${r}/`))
        if (!paths.length) {
          expect(e[`${r}@iot.navigationLink`], `${what}: link ${r}`).toBeDefined()
          continue
        }
        const target = TARGET[r]
        const inner = (isPlural(r) ? e[r] : [e[r]]) as Entity[]
        expect(Array.isArray(inner) && inner.every((x) => x && typeof x === "object"), `${what}: ${r}`).toBe(true)
        for (const x of inner.slice(0, 2)) {
          for (const p of TYPES[target].props) expect(x, `${what}: ${r}.${p}`).toHaveProperty([p])
          const deeper = paths.filter((p) => p.includes("/")).map((p) => p.slice(r.length + 1))
          if (deeper.length) checkExpanded(target, x, deeper, `${what}/${r}`)
        }
      }
    }
    const check = async (path: string, set: SetName) => {
      const rels = TYPES[set].rels
      const lists: string[][] = []
      for (let i = 0; i < rels.length; i++) lists.push([rels[i]], rels.slice(0, i + 1))
      const twoLevel = rels.flatMap((r) => TYPES[TARGET[r]].rels.map((r2) => `${r}/${r2}`))
      for (let i = 0; i < twoLevel.length; i++) lists.push([twoLevel[i]], twoLevel.slice(0, i + 1))
      for (const expand of lists) {
        const b = await get(`${path}?$expand=${expand.join(",")}`)
        for (const e of ((b.value ?? [b]) as Entity[]).slice(0, 2)) checkExpanded(set, e, expand, `${path} ${expand}`)
      }
    }
    for (const set of SETS) {
      await check(`/${set}`, set)
      const id = await first(set)
      for (const rel of TYPES[set].rels) await check(`/${set}${key(id)}/${rel}`, TARGET[rel])
    }
  })

  const sizes = async () => {
    const out: [string, SetName, number][] = []
    for (const [path, set] of await collections()) {
      const n = SETS.includes(path.slice(1) as SetName) ? total[set] : (await all(path)).length
      out.push([path, set, n])
    }
    return out
  }

  test("A.2 readEntitiesWithTopQO: $top limits a page; @iot.nextLink when more follow", async () => {
    for (const [path, , n] of await sizes())
      for (const top of [1, 2, 3, 4, 5, 12, 13]) {
        const b = await get(`${path}?$top=${top}`)
        expect(b.value?.length, `${path}?$top=${top}`).toBe(Math.min(top, n))
        if (n > top) {
          expect(b["@iot.nextLink"], `${path}?$top=${top}`).toBe(`${root}${path}?$top=${top}&$skip=${top}`)
          const next = await get(`${path}?$top=${top}&$skip=${top}`)
          expect(next.value?.[0]["@iot.id"]).not.toBe(b.value?.[0]["@iot.id"])
        } else expect(b, `${path}?$top=${top}`).not.toHaveProperty(["@iot.nextLink"])
      }
  })

  test("A.2 readEntitiesWithSkipQO: $skip skips entities; no @iot.nextLink on the last page", async () => {
    for (const [path, , n] of await sizes()) {
      const ids = (await all(path)).map((e) => e["@iot.id"])
      for (const skip of [1, 2, 3, 4, 12]) {
        const b = await get(`${path}?$skip=${skip}`)
        expect(
          b.value?.map((e) => e["@iot.id"]),
          `${path}?$skip=${skip}`,
        ).toEqual(ids.slice(skip))
        expect(b.value?.length).toBe(Math.max(0, n - skip))
        expect(b, `${path}?$skip=${skip}`).not.toHaveProperty(["@iot.nextLink"])
      }
    }
  })

  /** Order of two property values as the suite compares them: numbers as numbers, else as text. */
  const cmp = (a: unknown, b: unknown) =>
    typeof a === "number" && typeof b === "number" ? a - b : String(a) < String(b) ? -1 : String(a) > String(b) ? 1 : 0

  test("A.2 readEntitiesWithOrderbyQO: $orderby one or more properties, asc and desc", async () => {
    for (const [path, set] of await collections()) {
      const props = TYPES[set].props.filter((p) => !OBJECT_PROPS.has(p))
      const sorted = (value: Entity[], by: [string, 1 | -1][], what: string) => {
        for (let i = 1; i < value.length; i++)
          for (const [p, dir] of by) {
            const c = cmp(value[i - 1][p], value[i][p]) * dir
            expect(c, `${what} at ${i}`).toBeLessThanOrEqual(0)
            if (c !== 0) break
          }
      }
      for (const p of props) {
        sorted(await list(`${path}?$orderby=${p}`), [[p, 1]], `${path} ${p}`)
        sorted(await list(`${path}?$orderby=${p}%20asc`), [[p, 1]], `${path} ${p} asc`)
        sorted(await list(`${path}?$orderby=${p}%20desc`), [[p, -1]], `${path} ${p} desc`)
      }
      for (let i = 1; i <= props.length; i++) {
        const ps = props.slice(0, i)
        sorted(
          await list(`${path}?$orderby=${ps.join(",")}`),
          ps.map((p) => [p, 1]),
          `${path} ${ps}`,
        )
        const asc = ps.map((p) => `${p}%20asc`).join(",")
        sorted(
          await list(`${path}?$orderby=${asc}`),
          ps.map((p) => [p, 1]),
          `${path} ${asc}`,
        )
        const desc = ps.map((p) => `${p}%20desc`).join(",")
        sorted(
          await list(`${path}?$orderby=${desc}`),
          ps.map((p) => [p, -1]),
          `${path} ${desc}`,
        )
      }
    }
  })

  test("A.2 readEntitiesWithOrderbyQO, geometry: $orderby=location / feature is refused (400), not supported", async () => {
    for (const [path, prop] of [
      ["/Locations", "location"],
      ["/FeaturesOfInterest", "feature"],
    ]) {
      const res = await raw(`${path}?$orderby=${prop}`)
      expect(res.statusCode).toBe(400)
      expect(res.json()).toMatchObject({ error: "CM_ERR_BAD_QUERY", message: expect.stringContaining(prop) })
    }
  })

  test("A.2 readEntitiesWithCountQO: $count=true gives @iot.count, $count=false none", async () => {
    for (const [path, , n] of await sizes()) {
      const b = await get(`${path}?$count=true&$top=1`)
      expect(b["@iot.count"], path).toBe(n)
      expect(await get(`${path}?$count=false`)).not.toHaveProperty(["@iot.count"])
    }
    // counts checked against the data model, not only against the same view
    expect((await get(`/Things${key(water)}/Datastreams?$count=true`))["@iot.count"]).toBe(3)
    expect((await get(`/Things${key(power)}/Datastreams?$count=true`))["@iot.count"]).toBe(4)
    expect((await get(`/Datastreams${key(`${water}:water`)}/Observations?$count=true`))["@iot.count"]).toBe(6)
  })

  /** A property's value as $filter compares it: phenomenonTime by its start. */
  const filterValue = (p: string, v: unknown) =>
    p === "phenomenonTime"
      ? Date.parse(String(v).split("/")[0])
      : p.endsWith("Time") || p === "time"
        ? Date.parse(String(v))
        : v
  const literal = (p: string, v: unknown) =>
    typeof v === "number" && (p.endsWith("Time") || p === "time")
      ? new Date(v).toISOString()
      : typeof v === "number"
        ? String(v)
        : `'${String(v).replace(/'/g, "''")}'`
  const OPS: Record<string, (c: number) => boolean> = {
    lt: (c) => c < 0,
    le: (c) => c <= 0,
    eq: (c) => c === 0,
    ne: (c) => c !== 0,
    ge: (c) => c >= 0,
    gt: (c) => c > 0,
  }

  test("A.2 readEntitiesWithFilterQO: $filter with lt, le, eq, ne, ge, gt on each property", async () => {
    let checked = 0
    for (const [path, set] of await collections()) {
      const everything = await all(path)
      if (!everything.length) continue
      for (const p of TYPES[set].props.filter((x) => !OBJECT_PROPS.has(x))) {
        const values = everything.map((e) => filterValue(p, e[p]))
        const sample = [...values].sort(cmp)[Math.floor(values.length / 2)]
        for (const [op, holds] of Object.entries(OPS)) {
          const got = await all(`${path}?$filter=${encodeURIComponent(`${p} ${op} ${literal(p, sample)}`)}`)
          for (const e of got)
            expect(holds(cmp(filterValue(p, e[p]), sample)), `${path} ${p} ${op} ${sample}`).toBe(true)
          expect(got.length, `${path} ${p} ${op} ${sample}`).toBe(values.filter((v) => holds(cmp(v, sample))).length)
          checked++
        }
      }
    }
    expect(checked).toBeGreaterThan(100)
  })

  test("A.2 checkQueriesPriorityOrdering: $filter, then $count, $orderby, $skip and $top", async () => {
    const everything = await all(`/Observations`)
    const matching = everything
      .filter((o) => (o.result as number) > 3)
      .map((o) => Date.parse(String(o.phenomenonTime).split("/")[0]))
      .sort((a, b) => a - b)
    const b = await get(
      `/Observations?$count=true&$top=1&$skip=2&$orderby=phenomenonTime%20asc&$filter=result%20gt%20'3'`,
    )
    expect(b["@iot.count"]).toBe(matching.length)
    expect(b.value?.length).toBe(1)
    const o = (b.value as Entity[])[0]
    expect(o.result as number).toBeGreaterThan(3)
    expect(Date.parse(String(o.phenomenonTime).split("/")[0])).toBe(matching[2])
  })

  // ---- beyond the suite: what this service promises on top ----

  test("ObservedProperties carry OBIS codes and Datastreams UCUM units", async () => {
    const ops = await list(`/ObservedProperties`)
    const obis = Object.fromEntries(ops.map((o) => [o["@iot.id"], (o.properties as { obis?: string }).obis]))
    expect(obis).toMatchObject({
      "active-energy-import": "1-0:1.8.0",
      "active-power": "1-0:1.7.0",
      "voltage-l1": "1-0:32.7.0",
    })
    const units = Object.fromEntries(
      (await all(`/Things${key(power)}/Datastreams`)).map((d) => [
        String(d["@iot.id"]).split(":")[1],
        (d.unitOfMeasurement as { symbol: string }).symbol,
      ]),
    )
    expect(units).toEqual({ energy: "W.h", energyTotal: "W.h", power: "W", voltage: "V" })
    const volts = await all(`/Datastreams${key(`${power}:voltage`)}/Observations?$orderby=phenomenonTime`)
    expect(volts.slice(0, 3).map((o) => o.result)).toEqual([230.1, 229.8, 231])
    const byObis = await all(
      `/Observations?$filter=${encodeURIComponent("Datastream/ObservedProperty/properties/obis eq '1-0:1.7.0'")}`,
    )
    expect(byObis.map((o) => o.result)).toEqual([8, 20, 12, 16, 40, 24])
  })

  test("$filter functions and arithmetic over Observations, translated to SQL", async () => {
    const obs = await all(`/Observations`)
    const hours = new Set(obs.map((o) => new Date(String(o.phenomenonTime).split("/")[0]).getUTCHours()))
    const h = Math.min(...hours)
    const q = async (f: string) => all(`/Observations?$filter=${encodeURIComponent(f)}`)
    expect((await q(`hour(phenomenonTime) eq ${h}`)).length).toBe(
      obs.filter((o) => new Date(String(o.phenomenonTime).split("/")[0]).getUTCHours() === h).length,
    )
    const day = new Date(T0 * 1000)
    expect(
      (await q(`year(resultTime) eq ${day.getUTCFullYear()} and month(resultTime) eq ${day.getUTCMonth() + 1}`)).length,
    ).toBe(
      obs.filter((o) => {
        const t = new Date(String(o.resultTime))
        return t.getUTCFullYear() === day.getUTCFullYear() && t.getUTCMonth() === day.getUTCMonth()
      }).length,
    )
    expect((await q(`date(phenomenonTime) eq ${day.toISOString().slice(0, 10)}`)).length).toBe(obs.length)
    expect((await q(`result add 1 gt 10 and result mul 2 lt 100`)).length).toBe(
      obs.filter((o) => (o.result as number) + 1 > 10 && (o.result as number) * 2 < 100).length,
    )
    expect((await q(`result mod 2 eq 0 or not (result le 1000)`)).length).toBe(
      obs.filter((o) => (o.result as number) % 2 === 0 || (o.result as number) > 1000).length,
    )
    expect((await q(`phenomenonTime lt now() and resultTime ge ${new Date(T0 * 1000).toISOString()}`)).length).toBe(
      obs.length,
    )
    const things = async (f: string) => (await all(`/Things?$filter=${encodeURIComponent(f)}`)).map((t) => t["@iot.id"])
    expect(await things(`startswith(name, 'sta-w')`)).toEqual([water])
    expect(await things(`endswith(name, '${power.slice(-4)}')`)).toEqual([power])
    expect(await things(`substringof('sta-e', name)`)).toEqual([power])
    expect(await things(`contains(tolower(name), 'STA-W') or toupper(name) eq '${water.toUpperCase()}'`)).toEqual([
      water,
    ])
    expect(await things(`length(name) eq ${water.length} and properties/district eq 'centre'`)).toEqual([water])
    expect(await things(`properties/district eq null`)).toEqual([power])
  })

  test("bad $filter, $orderby, $select, $expand: 400 CM_ERR_BAD_QUERY naming the problem; values never become SQL", async () => {
    const bad = async (q: string, needle: string) => {
      const res = await raw(`/Observations?${q}`)
      expect(res.statusCode, q).toBe(400)
      expect(res.json(), q).toMatchObject({ error: "CM_ERR_BAD_QUERY", message: expect.stringContaining(needle) })
    }
    await bad(`$filter=${encodeURIComponent("colour eq 'red'")}`, "unknown property 'colour'")
    await bad(`$filter=${encodeURIComponent("geo.distance(result, 1) lt 3")}`, "geo.distance")
    await bad(`$filter=${encodeURIComponent("result eq")}`, "not a valid OData expression")
    await bad(`$filter=${encodeURIComponent("result gt 'many'")}`, "is not a number")
    await bad(`$filter=${encodeURIComponent("result")}`, "must be a condition")
    await bad(`$orderby=${encodeURIComponent("weight desc")}`, "unknown property 'weight'")
    await bad(`$select=weight`, "unknown property 'weight'")
    await bad(`$expand=Owner`, "no relation 'Owner'")
    expect((await raw(`/Observations?$top=abc`)).json().error).toBe("CM_ERR_BAD_REQUEST")
    // names from the request are looked up among the set's own, never on Object.prototype
    for (const name of ["constructor", "__proto__", "toString"]) {
      await bad(`$filter=${name}%20eq%201`, `unknown property '${name}'`)
      await bad(`$orderby=${name}`, `unknown property '${name}'`)
      await bad(`$select=${name}`, `unknown property '${name}'`)
      await bad(`$expand=${name}`, name)
      expect((await raw(`/Things${key(water)}/${name}`)).statusCode).toBe(404)
      expect((await raw(`/Things${key(water)}/${name}/$value`)).statusCode).toBe(404)
    }
    const none = await get(`/Things?$top=0&$count=true`)
    expect(none).toEqual({ "@iot.count": 2, value: [] })
    // a quote inside a string literal stays inside the parameter
    const evil = `name eq 'x'' OR 1=1; DROP TABLE readings; --'`
    expect(await all(`/Things?$filter=${encodeURIComponent(evil)}`)).toEqual([])
    expect((await all(`/Things`)).length).toBe(2)
    expect((await get(`/Datastreams${key(`${water}:water`)}/Observations?$count=true`))["@iot.count"]).toBe(6)
  })
})
