// Resource paths and query options of the SensorThings view: walks a path such as
// Things('m-1')/Datastreams('m-1:water')/Observations, checking each entity exists, and answers a
// collection, an entity, a property, its $value or $ref links. Every statement is built by
// Params/Translator (filter.ts): fixed SQL, values as parameters. Collections are paged by the
// data tier (ORDER BY ... LIMIT/OFFSET, one row more than the page to know whether a next page
// exists), never loaded whole.
//
// Every answer has a cost limit (StaBudgets; issue 21). Before any SQL, the most entities the
// request could build (each level's $top, or the relation's known size: a Thing has at most 7
// Datastreams, multiplied down each $expand path and summed over every level) must fit
// maxEntities. Collections without $top get a smaller page when needed (server-driven paging,
// with @iot.nextLink); $top values that cannot fit get 400 CM_ERR_READ_BUDGET. $expand is at most
// MAX_EXPAND_DEPTH levels deep and MAX_EXPAND_ITEMS relations wide. While the answer is built,
// the entities and an estimate of their JSON bytes are counted; past maxEntities or maxBytes the
// work stops (no statement is issued after that) with the same 400. Expansions are read one
// parent at a time, one statement per parent and expanded relation (two with $count): a request
// issues at most (path segments) + 2 + 2 × MAX_EXPAND_ITEMS × maxEntities statements, in turn.
import { BRIDGE_DEFAULTS } from "../defaults.js"
import { errors } from "../errors.js"
import type { Store } from "../store/store.js"
import { SETS } from "./entities.js"
import { isSetName, own, type EntitySet, type Relation, type Row, type SetName } from "./entity-set.js"
import { Params, Translator, evaluationError } from "./filter.js"
import { splitTop } from "./odata-parse.js"

export const DEFAULT_TOP = 100
export const MAX_TOP = 10000
/** $expand=A/B/C/D is 4 levels below the entities asked for: the deepest allowed. */
export const MAX_EXPAND_DEPTH = 4
/** Relations expanded in one request, every level together. */
export const MAX_EXPAND_ITEMS = 16

/** The cost limits of one request (BRIDGE_DEFAULTS.reads: READ_MAX_ENTITIES, READ_MAX_BYTES). */
export interface StaBudgets {
  /** Entities in one answer, every $expand level together. */
  maxEntities: number
  /** JSON bytes of the answer (estimated while it is built: each entity's own properties and links). */
  maxBytes: number
}

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

const over = (what: string) => errors.CM_ERR_READ_BUDGET(what)
const fmt = (n: number) => n.toLocaleString("en-US")
const ASK_LESS = "follow @iot.nextLink, or use a narrower $filter"

/** A level of an answer: its path from the entities asked for, and the most entities it can hold. */
interface Level {
  path: string
  entities: number
  /** The most parent entities (each with up to entities / parents of this level). */
  parents: number
}

/**
 * The page size of an expanded collection: its $top, else the page size of collections without
 * one, except for relations of a known small size (a Thing's Datastreams), which are whole.
 */
const expandTop = (rel: Relation, o: Options, top: number) => o.top ?? (rel.max !== undefined ? DEFAULT_TOP : top)

/** The levels below `parents` entities of `set` when a page without $top holds `top`. */
function levelsOf(set: EntitySet, o: Options, top: number, parents: number, path: string, depth: number, out: Level[]) {
  for (const item of o.expand) {
    const at = path ? `${path}/${item.rel}` : item.rel
    if (depth > MAX_EXPAND_DEPTH)
      throw over(`$expand=${at} is ${depth} levels deep, more than ${MAX_EXPAND_DEPTH}; ${ASK_LESS}`)
    const rel = set.relations[item.rel] // item.rel: one of the set's own relations (parseExpand)
    const each = rel.plural ? Math.min(expandTop(rel, item.options, top), rel.max ?? Infinity) : 1
    out.push({ path: at, entities: parents * each, parents })
    levelsOf(SETS[rel.target], item.options, top, parents * each, at, depth + 1, out)
  }
  return out
}

/**
 * The page size of every collection without $top (DEFAULT_TOP, or less when that many could
 * build more than `max` entities: server-driven paging, each such collection then has its
 * @iot.nextLink), or, before any SQL, a 400 when the request's own $top values could build more
 * than `max` entities even so. `one`: the path names one entity of `set`, else a page of them.
 */
export function pageSize(set: EntitySet, o: Options, one: boolean, max: number): number {
  const levels = (top: number) => {
    const count = one ? 1 : (o.top ?? top)
    return levelsOf(set, o, top, count, "", 1, [{ path: "", entities: count, parents: 1 }])
  }
  const total = (top: number) => levels(top).reduce((n, l) => n + l.entities, 0)
  const items = levels(1).length - 1
  if (items > MAX_EXPAND_ITEMS)
    throw over(`$expand names ${items} relations, more than ${MAX_EXPAND_ITEMS}; ${ASK_LESS}`)
  if (total(DEFAULT_TOP) <= max) return DEFAULT_TOP
  if (total(1) <= max) {
    // the largest that fits (total grows with it)
    let [lo, hi] = [1, DEFAULT_TOP]
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2)
      if (total(mid) <= max) lo = mid
      else hi = mid
    }
    return lo
  }
  const at = levels(DEFAULT_TOP)
  const worst = at.reduce((a, b) => (b.entities > a.entities ? b : a))
  // the $top at the costliest level with which the rest fits
  const fits = Math.floor((max - (total(DEFAULT_TOP) - worst.entities)) / worst.parents)
  const where = worst.path ? ` in $expand=${worst.path}(...)` : ""
  const hint = fits >= 1 ? `$top=${fits} or less${where}` : `a smaller $top (the page, or in $expand)`
  const parts = at.map((l) => `${l.path ? `${set.name}/${l.path}` : set.name} ${fmt(l.entities)}`).join(", ")
  throw over(
    `this request could build ${fmt(total(DEFAULT_TOP))} entities (${parts}), more than the ${fmt(max)} one answer may hold; ` +
      `ask for less: ${hint}, ${ASK_LESS}`,
  )
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

/** One request's answer: what it has built so far against its budgets. */
export class StaQuery {
  private built = 0
  private bytes = 0
  /** Set once over budget: no statement is issued after it. */
  private spent?: Error
  /** The page size of a collection without $top (pageSize). */
  private top = DEFAULT_TOP

  constructor(
    readonly store: Store,
    /** The service root URL, e.g. http://host/sta/v1.1 */
    readonly base: string,
    readonly budgets: StaBudgets = BRIDGE_DEFAULTS.reads,
  ) {}

  /** Counts an entity built (its JSON so far: properties, control information, links). */
  private spend(json: Record<string, unknown>) {
    this.built++
    this.bytes += JSON.stringify(json).length
    const { maxEntities, maxBytes } = this.budgets
    if (this.built > maxEntities || this.bytes > maxBytes) {
      const which =
        this.built > maxEntities
          ? `more than the ${fmt(maxEntities)} entities one answer may hold`
          : `more than the ${fmt(maxBytes)} bytes of JSON one answer may hold`
      this.spent = over(
        `the answer reached ${fmt(this.built)} entities and about ${fmt(this.bytes)} bytes, ${which}; ` +
          `ask for less: a smaller $top (the page, or in $expand), fewer properties with $select, ${ASK_LESS}`,
      )
    }
    if (this.spent) throw this.spent
  }

  /** The data tier refused a value (an impossible date, an overflow): the request's fault. */
  private async read(sql: string, params: unknown[]): Promise<Row[]> {
    if (this.spent) throw this.spent
    try {
      return await this.store.readView(sql, params)
    } catch (e) {
      const code = (e as { code?: unknown }).code
      // the request's fault (an impossible value, an overflow), said in our words, not the database's
      if (typeof code === "string" && code.startsWith("22")) throw evaluationError(code)
      throw e
    }
  }

  /** Entities of `rows`, one after another: a parent's expansions are read before the next parent's. */
  private async list(set: EntitySet, rows: Row[], o: Options) {
    const out: Record<string, unknown>[] = []
    for (const r of rows) out.push(await this.entity(set, r, o))
    return out
  }

  /** One row, or undefined. */
  async one(set: EntitySet, scopes: Scope[]): Promise<Row | undefined> {
    const p = new Params()
    const where = scopes.map((s) => s(p, "e")).join(" AND ")
    const rows = await this.read(
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
    const rows = await this.read(sql, p.values)
    let count: number | undefined
    if (o.count) {
      const cp = new Params()
      const c = build(cp)
      const [r] = await this.read(`SELECT count(*) AS n FROM (${set.countFrom ?? set.from}) e ${c.where}`, cp.values)
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
    for (const [name] of Object.entries(set.relations))
      if (!o.expand.some((e) => e.rel === name) && (!o.select || o.select.includes(name)))
        out[`${name}@iot.navigationLink`] = `${self}/${name}`
    this.spend(out)
    for (const [name, rel] of Object.entries(set.relations)) {
      const expanded = o.expand.find((e) => e.rel === name)
      if (expanded) {
        const target = SETS[rel.target]
        const scope = scopeOf(set, name, row)
        if (rel.plural) {
          const top = expandTop(rel, expanded.options, this.top)
          const pg = await this.page(target, [scope], expanded.options, top)
          if (pg.count !== undefined) out[`${name}@iot.count`] = pg.count
          out[name] = await this.list(target, pg.rows, expanded.options)
          if (pg.more)
            out[`${name}@iot.nextLink`] = nextLink(`${self}/${name}`, expanded.options.raw, top, expanded.options.skip)
        } else {
          const r = await this.one(target, [scope])
          out[name] = r ? await this.entity(target, r, expanded.options) : null
        }
      }
    }
    return out
  }

  /** Answers GET base/<path> with the query options given. */
  async get(path: string, pairs: [string, string][]): Promise<{ json?: unknown; text?: string }> {
    const segs = path.split("/")
    const notFound = () => errors.CM_ERR_NOT_FOUND(`SensorThings resource ${path}`)
    // the path is read first, without SQL (so that the cost is checked before any); each step then
    // looks up the next entity from the one before it
    const found = async (r: Promise<Row | undefined>) => (await r) ?? Promise.reject(notFound())
    const steps: ((prev: Row | undefined) => Promise<Row>)[] = []
    let set: EntitySet | undefined
    let scopes = (_prev: Row | undefined): Scope[] => []
    let entity = false
    let i = 0
    for (; i < segs.length; i++) {
      const m = /^([A-Za-z]+)(?:\((?:'((?:[^']|'')*)'|(\d+))\))?$/.exec(segs[i])
      if (!m) break
      const [, name, quoted, numeric] = m
      const key = quoted !== undefined ? quoted.replace(/''/g, "'") : numeric
      if (i === 0) {
        if (!isSetName(name)) throw notFound()
        set = SETS[name]
      } else {
        if (!set || !entity) throw notFound()
        const rel = own(set.relations, name)
        if (!rel) {
          if (key !== undefined) throw notFound()
          break // a property
        }
        if (!rel.plural && key !== undefined) throw notFound()
        const source = set
        scopes = (prev) => [scopeOf(source, name, prev as Row)]
        set = SETS[rel.target]
        entity = !rel.plural
        if (entity) {
          const [target, scoped] = [set, scopes]
          steps.push((prev) => found(this.one(target, scoped(prev))))
          continue
        }
      }
      if (key !== undefined) {
        const k = set.key(key)
        if (!k) throw notFound()
        const [target, scoped] = [set, scopes]
        steps.push((prev) => found(this.one(target, [...scoped(prev), keyScope(target, k)])))
        entity = true
      }
    }
    if (!set) throw notFound()
    const s = set
    const rest = segs.slice(i)
    const self = `${this.base}/${segs.slice(0, i).join("/")}`
    const walk = async () => {
      let row: Row | undefined
      for (const step of steps) row = await step(row)
      return row
    }

    if (!entity) {
      // a collection, or its $ref links
      if (rest.length > 1 || (rest.length === 1 && rest[0] !== "$ref")) throw notFound()
      const o = parseOptions(pairs, s)
      const ref = rest[0] === "$ref"
      this.top = pageSize(s, ref ? { ...o, expand: [] } : o, false, this.budgets.maxEntities)
      const top = o.top ?? this.top
      const pg = await this.page(s, scopes(await walk()), o, top)
      const value = ref ? pg.rows.map((r) => this.ref(s, r)) : await this.list(s, pg.rows, o)
      return {
        json: {
          ...(pg.count !== undefined ? { "@iot.count": pg.count } : {}),
          ...(pg.more ? { "@iot.nextLink": nextLink(self + (ref ? "/$ref" : ""), pairs, top, o.skip) } : {}),
          value,
        },
      }
    }
    if (rest.length === 0) {
      const o = parseOptions(pairs, s)
      this.top = pageSize(s, o, true, this.budgets.maxEntities)
      return { json: await this.entity(s, (await walk()) as Row, o) }
    }
    if (rest.length === 1 && rest[0] === "$ref") return { json: this.ref(s, (await walk()) as Row) }
    // a property, or its raw $value
    if (rest.length > 2 || (rest.length === 2 && rest[1] !== "$value")) throw notFound()
    const prop = rest[0]
    if (!FIELDS[s.name].includes(prop) || prop === "id") throw notFound()
    const value = s.json((await walk()) as Row)[prop]
    if (rest.length === 1) return { json: { [prop]: value } }
    return typeof value === "object" && value !== null ? { json: value } : { text: String(value) }
  }

  /** An entity's $ref link (counted as an entity). */
  private ref(set: EntitySet, row: Row) {
    const json = { "@iot.selfLink": this.selfLink(set, row) }
    this.spend(json)
    return json
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
