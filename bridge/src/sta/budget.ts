// What one SensorThings answer may cost, checked before any SQL (issue 21). The most entities the
// request could build (each level's $top, or the relation's known size: a Thing has at most 7
// Datastreams, multiplied down each $expand path and summed over every level) must fit
// maxEntities. Collections without $top get a smaller page when needed (server-driven paging,
// with @iot.nextLink); $top values that cannot fit get 400 CM_ERR_READ_BUDGET. $expand is at most
// MAX_EXPAND_DEPTH levels deep and MAX_EXPAND_ITEMS relations wide. While the answer is built,
// query.ts counts it against the same budgets.
import { errors } from "../errors.js"
import { SETS } from "./entities.js"
import type { EntitySet, Relation } from "./entity-set.js"
import type { Options } from "./options.js"

export const DEFAULT_TOP = 100
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

export const over = (what: string) => errors.CM_ERR_READ_BUDGET(what)
export const fmt = (n: number) => n.toLocaleString("en-US")
export const ASK_LESS = "follow @iot.nextLink, or use a narrower $filter"

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
export const expandTop = (rel: Relation, o: Options, top: number) =>
  o.top ?? (rel.max !== undefined ? DEFAULT_TOP : top)

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
