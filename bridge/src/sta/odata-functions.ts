// The OData operators and built-in functions of $filter and $orderby, as SQL. Times are read in
// UTC; a function that is not listed here (any geospatial one) is a 400 CM_ERR_BAD_QUERY naming it.
import { errors } from "../errors.js"
import type { Expr, ExprType } from "./odata-literals.js"
import type { Node } from "./odata-parse.js"

const bad = (what: string) => errors.CM_ERR_BAD_QUERY(what)

/** The parser's comparison and arithmetic nodes, by their SQL operator. */
export const COMPARE: Record<string, string> = {
  EqualsExpression: "=",
  NotEqualsExpression: "<>",
  LesserThanExpression: "<",
  LesserOrEqualsExpression: "<=",
  GreaterThanExpression: ">",
  GreaterOrEqualsExpression: ">=",
}
export const ARITH: Record<string, string> = {
  AddExpression: "+",
  SubExpression: "-",
  MulExpression: "*",
  DivExpression: "/",
  ModExpression: "%",
}

/** Time parts of OData (year(), ...) by their SQL field; times are read in UTC. */
const PARTS: Record<string, string> = {
  year: "year",
  month: "month",
  day: "day",
  hour: "hour",
  minute: "minute",
  second: "second",
}

/** Functions that are conditions (a comparison's other kind of leaf). */
export const CONDITIONS = new Set(["substringof", "contains", "startswith", "endswith"])

/** How a call reads its arguments: the translator's expr() and emit() over the set being filtered. */
export interface Operands {
  expr: (n: Node) => Expr
  emit: (e: Expr, as?: ExprType) => string
}

/** A call of `method` with `args` (`raw`: the call as written, for errors). */
export function call(tr: Operands, method: string, args: Node[], raw: string): Expr {
  const want = (n: number) => {
    if (args.length !== n) throw bad(`${method}() takes ${n} argument(s): '${raw}'`)
  }
  const arg = (i: number, type: ExprType) => {
    const e = tr.expr(args[i])
    const ok = e.type === type || (e.literal && e.type === "text")
    if (!ok) throw bad(`${method}() needs a ${type} as argument ${i + 1}: '${raw}'`)
    return tr.emit(e, type)
  }
  const argAny = (i: number) => tr.expr(args[i])
  switch (method) {
    case "substringof":
      want(2)
      return { type: "bool", sql: `(strpos(${arg(1, "text")}, ${arg(0, "text")}) > 0)` }
    case "contains":
      want(2)
      return { type: "bool", sql: `(strpos(${arg(0, "text")}, ${arg(1, "text")}) > 0)` }
    case "startswith":
      want(2)
      return { type: "bool", sql: `starts_with(${arg(0, "text")}, ${arg(1, "text")})` }
    case "endswith": {
      want(2)
      const b = arg(1, "text")
      return { type: "bool", sql: `(right(${arg(0, "text")}, length(${b})) = ${b})` }
    }
    case "length":
      want(1)
      return { type: "number", sql: `length(${arg(0, "text")})::float8` }
    case "indexof":
      want(2)
      return { type: "number", sql: `(strpos(${arg(0, "text")}, ${arg(1, "text")}) - 1)::float8` }
    case "substring": {
      if (args.length !== 2 && args.length !== 3) throw bad(`substring() takes 2 or 3 arguments: '${raw}'`)
      const s = arg(0, "text")
      const from = `((${arg(1, "number")})::int + 1)`
      return { type: "text", sql: `substr(${s}, ${from}${args.length === 3 ? `, (${arg(2, "number")})::int` : ""})` }
    }
    case "tolower":
    case "toupper":
    case "trim":
      want(1)
      return {
        type: "text",
        sql: `${method === "tolower" ? "lower" : method === "toupper" ? "upper" : "btrim"}(${arg(0, "text")})`,
      }
    case "concat":
      want(2)
      return { type: "text", sql: `(${arg(0, "text")} || ${arg(1, "text")})` }
    case "year":
    case "month":
    case "day":
    case "hour":
    case "minute":
    case "second": {
      want(1)
      const e = argAny(0)
      if (e.type === "date" && ["year", "month", "day"].includes(method))
        return { type: "number", sql: `extract(${PARTS[method]} FROM ${tr.emit(e)})::float8` }
      const t = arg(0, "time")
      return { type: "number", sql: `floor(extract(${PARTS[method]} FROM (${t}) AT TIME ZONE 'UTC'))::float8` }
    }
    case "fractionalseconds": {
      want(1)
      const t = arg(0, "time")
      const s = `extract(second FROM (${t}) AT TIME ZONE 'UTC')`
      return { type: "number", sql: `(${s} - floor(${s}))::float8` }
    }
    case "date":
      want(1)
      return { type: "date", sql: `((${arg(0, "time")}) AT TIME ZONE 'UTC')::date` }
    case "time":
      want(1)
      return { type: "timeofday", sql: `((${arg(0, "time")}) AT TIME ZONE 'UTC')::time` }
    case "totaloffsetminutes":
      want(1)
      arg(0, "time")
      return { type: "number", sql: `0::float8` }
    case "now":
      want(0)
      return { type: "time", sql: `now()` }
    case "mindatetime":
      want(0)
      return { type: "time", sql: `'-infinity'::timestamptz` }
    case "maxdatetime":
      want(0)
      return { type: "time", sql: `'infinity'::timestamptz` }
    case "round":
    case "floor":
    case "ceiling":
      want(1)
      return { type: "number", sql: `${method === "ceiling" ? "ceil" : method}(${arg(0, "number")})` }
  }
  throw bad(
    `unsupported function ${method}() (supported: substringof, contains, startswith, endswith, length, indexof, ` +
      `substring, tolower, toupper, trim, concat, year, month, day, hour, minute, second, fractionalseconds, ` +
      `date, time, totaloffsetminutes, now, mindatetime, maxdatetime, round, floor, ceiling; no geospatial functions)`,
  )
}
