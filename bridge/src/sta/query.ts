// Resource paths of the SensorThings view: walks a path such as
// Things('m-1')/Datastreams('m-1:water')/Observations, checking each entity exists, and answers a
// collection, an entity, a property, its $value or $ref links. Every statement is built by
// Params/Translator (filter.ts): fixed SQL, values as parameters. Collections are paged by the
// data tier (ORDER BY ... LIMIT/OFFSET, one row more than the page to know whether a next page
// exists), never loaded whole.
//
// Every answer has a cost limit (StaBudgets; issue 21), checked before any SQL (budget.ts). While
// the answer is built, the entities and an estimate of their JSON bytes are counted; past
// maxEntities or maxBytes the work stops (no statement is issued after that) with 400
// CM_ERR_READ_BUDGET. Expansions are read one parent at a time, one statement per parent and
// expanded relation (two with $count): a request issues at most (path segments) + 2 + 2 ×
// MAX_EXPAND_ITEMS × maxEntities statements, in turn.
import { BRIDGE_DEFAULTS } from "../defaults.js"
import { errors } from "../errors.js"
import type { Store } from "../store/store.js"
import { ASK_LESS, DEFAULT_TOP, expandTop, fmt, over, pageSize, type StaBudgets } from "./budget.js"
import { SETS } from "./entities.js"
import { isSetName, own, type EntitySet, type Row } from "./entity-set.js"
import { Params, Translator, evaluationError } from "./filter.js"
import { FIELDS, parseOptions, type Options } from "./options.js"
import { monthWindows, timeBounds } from "./time-windows.js"

/** An id inside an entity's URL: quoted, quotes doubled. */
const quote = (id: string) => `'${id.replace(/'/g, "''")}'`

/** Rows of `set` related to `row` of the source set (the relation's condition on fetched values); meterId: the one meter they belong to, when the relation says. */
type Scope = ((p: Params, alias: string) => string) & { meterId?: string }

const scopeOf = (set: EntitySet, relName: string, row: Row): Scope => {
  const rel = set.relations[relName] // relName: one of the set's own relations, never request text
  const scope: Scope = (p, a) => rel.on(a, (col) => p.add(row[col]))
  if (rel.meter !== undefined && typeof row[rel.meter] === "string") scope.meterId = row[rel.meter] as string
  return scope
}

/** A page reads month windows (time-windows.ts) only while it needs at most this many rows ($skip + $top). */
const WINDOWED_ROWS = 10_000

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
    /** Pages of one meter's Observations by month window (windowedPage); tests compare with false. */
    readonly windows = true,
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

  /**
   * A page of a collection, its count when asked, and whether more rows follow. `byMonth`: a
   * collection the request's path names may be read by month window (windowedPage); an $expand
   * is not, so that it stays one statement per parent and relation (two with $count).
   */
  async page(set: EntitySet, scopes: Scope[], o: Options, top: number, byMonth = false) {
    const build = (p: Params) => {
      const tr = new Translator(p)
      const where = scopes.map((s) => s(p, "e"))
      if (o.filter !== undefined) where.push(tr.filter(set, "e", o.filter))
      return { tr, where: where.length ? `WHERE ${where.join(" AND ")}` : "" }
    }
    const windowed = byMonth ? await this.windowedPage(set, scopes, o, top, build) : undefined
    if (windowed) return windowed
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

  /**
   * page() for one meter's rows in time order, month by month (time-windows.ts); undefined when
   * the set, the scope or the order does not allow it, or when the page needs too many rows.
   */
  private async windowedPage(
    set: EntitySet,
    scopes: Scope[],
    o: Options,
    top: number,
    build: (p: Params) => { tr: Translator; where: string },
  ) {
    const by = set.byMeterTime
    const meterId = scopes.find((s) => s.meterId !== undefined)?.meterId
    const need = o.skip + top + 1
    if (!this.windows || !by || meterId === undefined || need > WINDOWED_ROWS) return undefined
    // the set's own order (meter, then time) or phenomenonTime first, either way
    const by1 = o.orderby === undefined ? [] : /^\s*phenomenonTime(?:\s+(asc|desc))?\s*$/i.exec(o.orderby)
    if (by1 === null) return undefined
    const bounds = timeBounds(o.filter)
    const sp = new Params()
    const [span] = await this.read(by.span(sp.add(meterId)), sp.values)
    const lo = Math.max(span?.lo ? new Date(span.lo as Date).getTime() : Infinity, bounds.from ?? -Infinity)
    // the last reading's millisecond, inclusive (ts keeps microseconds)
    const hi = Math.min(span?.hi ? new Date(span.hi as Date).getTime() + 1 : -Infinity, bounds.to ?? Infinity)
    const windows = lo < hi ? monthWindows(lo, hi, by1[1]?.toLowerCase() === "desc") : []
    if (!windows) return undefined
    const source = (p: Params, t0: number, t1: number) =>
      by.from(
        p.add(meterId),
        p.add(new Date(t0).toISOString(), "timestamptz"),
        p.add(new Date(t1).toISOString(), "timestamptz"),
      )
    const rows: Row[] = []
    for (const [t0, t1] of windows) {
      if (rows.length >= need) break
      const p = new Params()
      const { tr, where } = build(p)
      const order = [...(o.orderby !== undefined ? tr.orderBy(set, "e", o.orderby) : []), ...set.order("e")]
      rows.push(
        ...(await this.read(
          `SELECT e.* FROM (${source(p, t0, t1)}) e ${where} ORDER BY ${order.join(", ")}
           LIMIT ${p.add(need - rows.length, "bigint")}`,
          p.values,
        )),
      )
    }
    let count: number | undefined
    if (o.count) {
      const cp = new Params()
      const c = build(cp)
      count =
        lo < hi
          ? Number((await this.read(`SELECT count(*) AS n FROM (${source(cp, lo, hi)}) e ${c.where}`, cp.values))[0].n)
          : 0
    }
    const page = rows.slice(o.skip, o.skip + top)
    return { rows: page, more: top > 0 && rows.length > o.skip + top, count }
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
      const pg = await this.page(s, scopes(await walk()), o, top, true)
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
