// The literals of $filter and $orderby as typed values, and the type of every translated term
// (Expr). A number that is not finite, a date or time that is not on the calendar (2026-02-30) is
// a 400 CM_ERR_BAD_QUERY naming it.
import { errors } from "../errors.js"
import type { PropType } from "./entity-set.js"
import type { Node } from "./odata-parse.js"

export type ExprType = PropType | "date" | "timeofday" | "null"

export interface Expr {
  type: ExprType
  sql: string
  /** A literal not emitted yet, so a comparison can read it as its other side's type. */
  literal?: { raw: string; value: unknown }
}

const bad = (what: string) => errors.CM_ERR_BAD_QUERY(what)

/**
 * A number written as a string ('3', '-2.5', '1e3'): what `result gt '3'` compares as a number.
 * Not JavaScript's Number(): '0x10', '0b1', ' 3', 'Infinity' are no decimal numbers.
 */
export const DECIMAL = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/

const isLeap = (y: number) => (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0
const daysIn = (y: number, m: number) => [31, isLeap(y) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1]
const DATE = /^(\d{4})-(\d{2})-(\d{2})$/
const TIME_OF_DAY = /^(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,12})?)?$/
const DATE_TIME = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}(?::\d{2}(?:\.\d{1,12})?)?)(Z|[+-](\d{2}):(\d{2}))$/i

/** OData's date (YYYY-MM-DD), checked against the calendar: 2026-02-30 is no date. */
function isDate(raw: string) {
  const m = DATE.exec(raw)
  if (!m) return false
  const [y, mo, d] = m.slice(1).map(Number)
  return mo >= 1 && mo <= 12 && d >= 1 && d <= daysIn(y, mo)
}
/** OData's timeOfDay (hh:mm[:ss[.fff]]), 00:00 to 23:59:59.999. */
function isTimeOfDay(raw: string) {
  const m = TIME_OF_DAY.exec(raw)
  return !!m && Number(m[1]) <= 23 && Number(m[2]) <= 59 && Number(m[3] ?? 0) <= 59
}
/** OData's dateTimeOffset as an instant, or undefined when it is not one (`new Date` would take 2026-02-30). */
export function dateTimeOffset(raw: string): Date | undefined {
  const m = DATE_TIME.exec(raw)
  if (!m || !isDate(m[1]) || !isTimeOfDay(m[2])) return undefined
  if (m[4] !== undefined && (Number(m[4]) > 23 || Number(m[5]) > 59)) return undefined
  const t = new Date(raw)
  return Number.isNaN(t.getTime()) ? undefined : t
}

const NUMERIC_EDM = new Set([
  "Edm.SByte",
  "Edm.Byte",
  "Edm.Int16",
  "Edm.Int32",
  "Edm.Int64",
  "Edm.Decimal",
  "Edm.Double",
  "Edm.Single",
])

/** A literal of the expression: its value and type, checked (a number finite, a date on the calendar). */
export function literal(n: Node): Expr {
  const edm = String(n.value)
  const raw = n.raw
  if (edm === "null") return { type: "null", sql: "NULL", literal: { raw, value: null } }
  if (edm === "Edm.String") {
    const value = raw.slice(1, -1).replace(/''/g, "'")
    return { type: "text", sql: "", literal: { raw, value } }
  }
  if (edm === "Edm.Boolean") return { type: "bool", sql: "", literal: { raw, value: /^true$/i.test(raw) } }
  if (NUMERIC_EDM.has(edm)) {
    const value = Number(raw.replace(/[mMdDfFlL]$/, ""))
    if (!Number.isFinite(value)) throw bad(`'${raw}' is not a finite number`)
    return { type: "number", sql: "", literal: { raw, value } }
  }
  if (edm === "Edm.DateTimeOffset") {
    const value = dateTimeOffset(raw)
    if (!value) throw bad(`'${raw}' is not a date-time on the calendar`)
    return { type: "time", sql: "", literal: { raw, value } }
  }
  if (edm === "Edm.Date") {
    if (!isDate(raw)) throw bad(`'${raw}' is not a date on the calendar`)
    return { type: "date", sql: "", literal: { raw, value: raw } }
  }
  if (edm === "Edm.TimeOfDay") {
    if (!isTimeOfDay(raw)) throw bad(`'${raw}' is not a time of day`)
    return { type: "timeofday", sql: "", literal: { raw, value: raw } }
  }
  throw bad(`literals of type ${edm} are not supported ('${raw}')`)
}
