// Resource paths and query options of the SensorThings view: walks a path such as
// Things('m-1')/Datastreams('m-1:water')/Observations, checking each entity exists, and answers a
// collection, an entity, a property, its $value or $ref links. Every statement is built by
// Params/Translator (filter.ts): fixed SQL, values as parameters. Collections are paged by the
// data tier (ORDER BY ... LIMIT/OFFSET, one row more than the page to know whether a next page
// exists), never loaded whole.
import { errors } from "../errors.js"
import type { Store } from "../store/store.js"
import { SETS, isSetName, own, type EntitySet, type Row, type SetName } from "./entities.js"
import { Params, Translator, splitTop } from "./filter.js"

export const DEFAULT_TOP = 100
export const MAX_TOP = 10000

/** Query options of one level ($expand nests them). */
export interface Options {
  top?: number
  skip: number
  count: boolean
  filter?: string
  orderby?: string
  select?: string[]
  expand: ExpandItem[]
  /** The options as given, for @iot.nextLink. */
  raw: [string, string][]
}

export interface ExpandItem {
  rel: string
  options: Options
}

const bad = (what: string) => errors.CM_ERR_BAD_QUERY(what)

/** Property names each set answers (what $select and Things('x')/name accept). */
const FIELDS: Record<SetName, string[]> = {
  Things: ["id", "name", "description", "properties"],
  Locations: ["id", "name", "description", "encodingType", "location", "properties"],
  HistoricalLocations: ["id", "time"],
  Datastreams: ["id", "name", "description", "observationType", "unitOfMeasurement"],
  Sensors: ["id", "name", "description", "encodingType", "metadata"],
  ObservedProperties: ["id", "name", "definition", "description", "properties"],
  Observations: ["id", "phenomenonTime", "resultTime", "result", "parameters"],
  FeaturesOfInterest: ["id", "name", "description", "encodingType", "feature"],
}

const int = (name: string, v: string, max: number) => {
  if (!/^\d{1,9}$/.test(v) || Number(v) > max) throw bad(`${name} must be an integer 0..${max} (got '${v}')`)
  return Number(v)
}

/** Reads query options from (key, value) pairs; nested ones come from $expand=Rel($top=1;...). */
export function parseOptions(pairs: [string, string][], set: EntitySet): Options {
  const o: Options = { skip: 0, count: false, expand: [], raw: pairs }
  for (const [k, v] of pairs) {
    switch (k) {
      case "$top":
        o.top = int(k, v, MAX_TOP)
        break
      case "$skip":
        o.skip = int(k, v, 1_000_000_000)
        break
      case "$count":
        if (v !== "true" && v !== "false") throw bad(`$count must be true or false (got '${v}')`)
        o.count = v === "true"
        break
      case "$filter":
        o.filter = v
        break
      case "$orderby":
        o.orderby = v
        break
      case "$select": {
        o.select = v.split(",").map((s) => s.trim())
        for (const s of o.select)
          if (!FIELDS[set.name].includes(s) && !own(set.relations, s))
            throw bad(
              `$select: unknown property '${s}' of ${set.name} (known: ${[...FIELDS[set.name], ...Object.keys(set.relations)].join(", ")})`,
            )
        break
      }
      case "$expand":
        o.expand = parseExpand(v, set)
        break
      case "$resultFormat":
        if (v !== "default") throw bad(`$resultFormat ${v} is not supported (default only)`)
        break
      default:
        throw bad(`unknown query option '${k}'`)
    }
  }
  return o
}

function parseExpand(source: string, set: EntitySet): ExpandItem[] {
  const items: ExpandItem[] = []
  for (const part of splitTop(source, ",")) {
    const m = /^\s*([A-Za-z]+(?:\/[A-Za-z]+)*)\s*(?:\((.*)\))?\s*$/s.exec(part)
    if (!m) throw bad(`$expand: cannot read '${part}'`)
    const path = m[1].split("/")
    const nested: [string, string][] = m[2]
      ? splitTop(m[2], ";").map((kv) => {
          const eq = kv.indexOf("=")
          if (eq < 1) throw bad(`$expand: cannot read option '${kv}' in '${part}'`)
          return [kv.slice(0, eq).trim(), kv.slice(eq + 1)]
        })
      : []
    addExpand(items, set, path, nested, part)
  }
  return items
}

function addExpand(items: ExpandItem[], set: EntitySet, path: string[], nested: [string, string][], part: string) {
  const rel = own(set.relations, path[0])
  if (!rel)
    throw bad(`$expand: ${set.name} has no relation '${path[0]}' (relations: ${Object.keys(set.relations).join(", ")})`)
  const target = SETS[rel.target]
  let item = items.find((i) => i.rel === path[0])
  if (!item) {
    item = { rel: path[0], options: parseOptions(path.length === 1 ? nested : [], target) }
    items.push(item)
  } else if (path.length === 1 && nested.length) {
    const extra = parseOptions(nested, target)
    item.options = { ...extra, expand: [...item.options.expand, ...extra.expand] }
  }
  if (path.length > 1) addExpand(item.options.expand, target, path.slice(1), nested, part)
}

/** An id inside an entity's URL: quoted, quotes doubled. */
const quote = (id: string) => `'${id.replace(/'/g, "''")}'`

/** The data tier refused a value (an impossible date, an overflow): the request's fault. */
async function read(store: Store, sql: string, params: unknown[]): Promise<Row[]> {
  try {
    return await store.readView(sql, params)
  } catch (e) {
    const code = (e as { code?: unknown }).code
    if (typeof code === "string" && code.startsWith("22"))
      throw bad(`the query cannot be evaluated: ${(e as Error).message}`)
    throw e
  }
}

/** Rows of `set` related to `row` of the source set (the relation's condition on fetched values). */
type Scope = (p: Params, alias: string) => string

const scopeOf = (set: EntitySet, relName: string, row: Row): Scope => {
  const rel = set.relations[relName] // relName: one of the set's own relations, never request text
  return (p, a) => rel.on(a, (col) => p.add(row[col]))
}

const keyScope =
  (set: EntitySet, key: unknown[]): Scope =>
  (p, a) =>
    set.keyCols.map((c, i) => `${a}.${c} = ${p.add(key[i])}`).join(" AND ")

export class StaQuery {
  constructor(
    readonly store: Store,
    /** The service root URL, e.g. http://host/sta/v1.1 */
    readonly base: string,
  ) {}

  /** One row, or undefined. */
  async one(set: EntitySet, scopes: Scope[]): Promise<Row | undefined> {
    const p = new Params()
    const where = scopes.map((s) => s(p, "e")).join(" AND ")
    const rows = await read(
      this.store,
      `SELECT e.* FROM (${set.from}) e WHERE ${where} ORDER BY ${set.order("e").join(", ")} LIMIT 1`,
      p.values,
    )
    return rows[0]
  }

  /** A page of a collection, its count when asked, and whether more rows follow. */
  async page(set: EntitySet, scopes: Scope[], o: Options, top: number) {
    const build = (p: Params) => {
      const tr = new Translator(p)
      const where = scopes.map((s) => s(p, "e"))
      if (o.filter !== undefined) where.push(tr.filter(set, "e", o.filter))
      return { tr, where: where.length ? `WHERE ${where.join(" AND ")}` : "" }
    }
    const p = new Params()
    const { tr, where } = build(p)
    const order = [...(o.orderby !== undefined ? tr.orderBy(set, "e", o.orderby) : []), ...set.order("e")]
    const sql = `SELECT e.* FROM (${set.from}) e ${where} ORDER BY ${order.join(", ")}
      LIMIT ${p.add(top + 1, "bigint")} OFFSET ${p.add(o.skip, "bigint")}`
    const rows = await read(this.store, sql, p.values)
    let count: number | undefined
    if (o.count) {
      const cp = new Params()
      const c = build(cp)
      const [r] = await read(
        this.store,
        `SELECT count(*) AS n FROM (${set.countFrom ?? set.from}) e ${c.where}`,
        cp.values,
      )
      count = Number(r.n)
    }
    // $top=0 asks for the count alone: no next page to follow
    return { rows: rows.slice(0, top), more: top > 0 && rows.length > top, count }
  }

  selfLink(set: EntitySet, row: Row) {
    return `${this.base}/${set.name}(${quote(set.id(row))})`
  }

  /** An entity as JSON: control information, the selected properties, navigation links, expansions. */
  async entity(set: EntitySet, row: Row, o: Options): Promise<Record<string, unknown>> {
    const self = this.selfLink(set, row)
    const out: Record<string, unknown> = { "@iot.id": set.id(row), "@iot.selfLink": self }
    for (const [k, v] of Object.entries(set.json(row))) if (!o.select || o.select.includes(k)) out[k] = v
    for (const [name, rel] of Object.entries(set.relations)) {
      const expanded = o.expand.find((e) => e.rel === name)
      if (expanded) {
        const target = SETS[rel.target]
        const scope = scopeOf(set, name, row)
        if (rel.plural) {
          const top = expanded.options.top ?? DEFAULT_TOP
          const pg = await this.page(target, [scope], expanded.options, top)
          if (pg.count !== undefined) out[`${name}@iot.count`] = pg.count
          out[name] = await Promise.all(pg.rows.map((r) => this.entity(target, r, expanded.options)))
          if (pg.more)
            out[`${name}@iot.nextLink`] = nextLink(`${self}/${name}`, expanded.options.raw, top, expanded.options.skip)
        } else {
          const r = await this.one(target, [scope])
          out[name] = r ? await this.entity(target, r, expanded.options) : null
        }
      } else if (!o.select || o.select.includes(name)) out[`${name}@iot.navigationLink`] = `${self}/${name}`
    }
    return out
  }

  /** Answers GET base/<path> with the query options given. */
  async get(path: string, pairs: [string, string][]): Promise<{ json?: unknown; text?: string }> {
    const segs = path.split("/")
    const notFound = () => errors.CM_ERR_NOT_FOUND(`SensorThings resource ${path}`)
    let set: EntitySet | undefined
    let row: Row | undefined
    let scopes: Scope[] = []
    let i = 0
    for (; i < segs.length; i++) {
      const m = /^([A-Za-z]+)(?:\((?:'((?:[^']|'')*)'|(\d+))\))?$/.exec(segs[i])
      if (!m) break
      const [, name, quoted, numeric] = m
      const key = quoted !== undefined ? quoted.replace(/''/g, "'") : numeric
      if (i === 0) {
        if (!isSetName(name)) throw notFound()
        set = SETS[name]
        scopes = []
      } else {
        if (!set || !row) throw notFound()
        const rel = own(set.relations, name)
        if (!rel) {
          if (key !== undefined) throw notFound()
          break // a property
        }
        if (!rel.plural && key !== undefined) throw notFound()
        scopes = [scopeOf(set, name, row)]
        set = SETS[rel.target]
        row = undefined
        if (!rel.plural) {
          row = await this.one(set, scopes)
          if (!row) throw notFound()
          continue
        }
      }
      if (key !== undefined) {
        const k = set.key(key)
        if (!k) throw notFound()
        row = await this.one(set, [...scopes, keyScope(set, k)])
        if (!row) throw notFound()
      }
    }
    if (!set) throw notFound()
    const rest = segs.slice(i)
    const self = `${this.base}/${segs.slice(0, i).join("/")}`

    if (!row) {
      // a collection, or its $ref links
      if (rest.length > 1 || (rest.length === 1 && rest[0] !== "$ref")) throw notFound()
      const o = parseOptions(pairs, set)
      const top = o.top ?? DEFAULT_TOP
      const pg = await this.page(set, scopes, o, top)
      const s = set
      const value =
        rest[0] === "$ref"
          ? pg.rows.map((r) => ({ "@iot.selfLink": this.selfLink(s, r) }))
          : await Promise.all(pg.rows.map((r) => this.entity(s, r, o)))
      return {
        json: {
          ...(pg.count !== undefined ? { "@iot.count": pg.count } : {}),
          ...(pg.more ? { "@iot.nextLink": nextLink(self + (rest[0] ? "/$ref" : ""), pairs, top, o.skip) } : {}),
          value,
        },
      }
    }
    if (rest.length === 0) return { json: await this.entity(set, row, parseOptions(pairs, set)) }
    if (rest.length === 1 && rest[0] === "$ref") return { json: { "@iot.selfLink": this.selfLink(set, row) } }
    // a property, or its raw $value
    if (rest.length > 2 || (rest.length === 2 && rest[1] !== "$value")) throw notFound()
    const prop = rest[0]
    if (!FIELDS[set.name].includes(prop) || prop === "id") throw notFound()
    const value = set.json(row)[prop]
    if (rest.length === 1) return { json: { [prop]: value } }
    return typeof value === "object" && value !== null ? { json: value } : { text: String(value) }
  }
}

/** The URL of the next page: the same options with $skip advanced (and $top kept). */
export function nextLink(url: string, pairs: [string, string][], top: number, skip: number) {
  const kept = pairs.filter(([k]) => k !== "$skip" && k !== "$top")
  const q = [...kept, ["$top", String(top)], ["$skip", String(skip + top)]]
    .map(([k, v]) => `${k}=${encodeURIComponent(v)}`)
    .join("&")
  return `${url}?${q}`
}
