// A page of one meter's Observations in time order, read a UTC month at a time (issue 24).
//
// Older readings live in one block per meter and month (store/blocks.ts), decoded when read. A
// page over the whole view (readings_all) decodes every block of the meter before its ORDER BY
// and LIMIT: a year's $filter with $top=100 took 260-320 ms for the 100 rows of its first month.
// Read month by month in the page's order, each month through readings_between (which decodes
// only that month's block), the page stops at the month that fills it. Concatenating the months
// keeps the order: a meter's readings of two months never share a phenomenonTime.
//
// The months searched are the meter's (its first and last reading) within the bounds the $filter
// sets on phenomenonTime in its top-level `and` terms; the whole $filter still applies in each
// month, so bounds only ever narrow the search to months that can hold a match.
import type { Node } from "./odata-parse.js"
import { parse } from "./odata-parse.js"
import { dateTimeOffset } from "./odata-literals.js"

/** [from, to) of phenomenonTime that a $filter implies (undefined: unbounded on that side). */
export interface TimeBounds {
  from?: number
  to?: number
}

const PARENS = new Set(["CommonExpression", "BoolParenExpression", "ParenExpression"])
const LOWER = new Set(["GreaterOrEqualsExpression", "GreaterThanExpression"])
const UPPER: Record<string, number> = { LesserThanExpression: 0, LesserOrEqualsExpression: 1, EqualsExpression: 1 }

const isTime = (n: Node | undefined, prop: string) => n?.type === "FirstMemberExpression" && String(n.raw) === prop
const timeLiteral = (n: Node | undefined) =>
  n?.type === "Literal" && n.value === "Edm.DateTimeOffset" ? dateTimeOffset(String(n.raw))?.getTime() : undefined

function bounds(n: Node, prop: string, out: TimeBounds): void {
  if (PARENS.has(n.type)) return bounds(n.value as Node, prop, out)
  const v = n.value as { left?: Node; right?: Node } | undefined
  if (n.type === "AndExpression" && v?.left && v.right) {
    bounds(v.left, prop, out)
    bounds(v.right, prop, out)
    return
  }
  if (!isTime(v?.left, prop)) return
  const t = timeLiteral(v?.right)
  if (t === undefined) return
  // the bound is a superset: ge and gt both from t; le and eq up to t's millisecond, inclusive
  if (LOWER.has(n.type) || n.type === "EqualsExpression") out.from = Math.max(out.from ?? -Infinity, t)
  if (n.type in UPPER) out.to = Math.min(out.to ?? Infinity, t + UPPER[n.type])
}

/** The phenomenonTime bounds of a $filter's top-level `and` terms (a term under `or` or `not` sets none). */
export function timeBounds(filter: string | undefined, prop = "phenomenonTime"): TimeBounds {
  const out: TimeBounds = {}
  if (filter !== undefined) bounds(parse(filter, "$filter"), prop, out)
  return out
}

/** The first of t's UTC month, and of the month after. */
const month = (t: number, add = 0) => {
  const d = new Date(t)
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + add, 1)
}

/** More months than a page reads one by one (a meter's decade is 120): the whole view instead. */
export const MAX_WINDOWS = 240

/**
 * The UTC month windows [from, to) covering [lo, hi), clipped to it, oldest first or (desc)
 * newest first; undefined when there are more than MAX_WINDOWS (a reading dated decades off).
 */
export function monthWindows(lo: number, hi: number, desc: boolean): [number, number][] | undefined {
  const out: [number, number][] = []
  for (let m = month(lo); m < hi; m = month(m, 1)) {
    if (out.length === MAX_WINDOWS) return undefined
    out.push([Math.max(m, lo), Math.min(month(m, 1), hi)])
  }
  return desc ? out.reverse() : out
}
