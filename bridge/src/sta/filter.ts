// OData $filter and $orderby of the SensorThings view, translated to parameterised SQL.
//
// The expression is parsed by @odata/parser (npm, MIT; a maintained TypeScript fork of the
// OData v4 ABNF parser odata-v4-parser). Chosen over @balena/odata-parser, which is better kept
// but does not parse the bare ISO 8601 date-time literals that SensorThings filters use
// (`phenomenonTime gt 2026-01-01T00:00:00Z`), and over odata-parser / odata-v4-parser, whose
// last releases are years old and untyped. The parser only yields an AST: this file walks it and
// emits SQL from fixed fragments, every literal as a typed parameter ($n::type), every property
// through the entity set's list (entities.ts). Anything else — an unknown property, function or
// operator, a type mismatch — is a 400 CM_ERR_BAD_QUERY naming it.
import { defaultParser } from "@odata/parser"
import { errors } from "../errors.js"
import { SETS, own, type EntitySet, type PropType } from "./entities.js"

/** Parameters of one statement: values pushed in order, referenced as $1, $2, ... */
export class Params {
  readonly values: unknown[] = []
  add(value: unknown, cast?: string) {
    this.values.push(value)
    return `$${this.values.length}${cast ? `::${cast}` : ""}`
  }
}

type ExprType = PropType | "date" | "timeofday" | "null"

interface Expr {
  type: ExprType
  sql: string
  /** A literal not emitted yet, so a comparison can read it as its other side's type. */
  literal?: { raw: string; value: unknown }
}

const CAST: Record<Exclude<ExprType, "null">, string> = {
  text: "text",
  number: "float8",
  time: "timestamptz",
  bool: "boolean",
  date: "date",
  timeofday: "time",
}

const bad = (what: string) => errors.CM_ERR_BAD_QUERY(what)

const PARENS = new Set(["CommonExpression", "BoolParenExpression", "ParenExpression"])

interface Node {
  type: string
  value: unknown
  raw: string
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

const COMPARE: Record<string, string> = {
  EqualsExpression: "=",
  NotEqualsExpression: "<>",
  LesserThanExpression: "<",
  LesserOrEqualsExpression: "<=",
  GreaterThanExpression: ">",
  GreaterOrEqualsExpression: ">=",
}
const ARITH: Record<string, string> = {
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
const CONDITIONS = new Set(["substringof", "contains", "startswith", "endswith"])

/** The property paths a node names (the outermost member expressions in it). */
function members(n: unknown, out: string[] = []): string[] {
  if (Array.isArray(n)) for (const x of n) members(x, out)
  else if (n !== null && typeof n === "object") {
    const node = n as Partial<Node>
    if (node.type === "FirstMemberExpression" || node.type === "MemberExpression") out.push(String(node.raw))
    else for (const v of Object.values(n)) members(v, out)
  }
  return out
}

const nullLiteral = (n: unknown): boolean =>
  Array.isArray(n)
    ? n.some(nullLiteral)
    : n !== null &&
      typeof n === "object" &&
      (((n as Node).type === "Literal" && (n as Node).value === "null") || Object.values(n).some(nullLiteral))

export class Translator {
  private aliases = 0
  /** Leading segments of property paths already resolved by an enclosing semi-join (semiJoin). */
  private strip = 0
  constructor(readonly params: Params) {}

  /** Parses an OData boolean expression into SQL over `alias` of `set`. */
  filter(set: EntitySet, alias: string, source: string): string {
    const e = this.where(set, alias, parse(source, "$filter"))
    if (e.type !== "bool") throw bad(`$filter must be a condition (got a ${e.type} expression): ${source}`)
    return e.sql
  }

  /** `expr [asc|desc], ...` into ORDER BY terms. */
  orderBy(set: EntitySet, alias: string, source: string): string[] {
    return splitTop(source, ",").map((item) => {
      const m = /^(.*?)(?:\s+(asc|desc))?$/i.exec(item.trim())
      if (!m || !m[1]) throw bad(`$orderby: empty item in '${source}'`)
      const e = this.expr(set, alias, parse(m[1], "$orderby"))
      const sql = e.type === "text" ? `${this.emit(e)} COLLATE "C"` : this.emit(e)
      return `${sql} ${(m[2] ?? "asc").toUpperCase()}`
    })
  }

  private emit(e: Expr, as?: ExprType): string {
    if (!e.literal) return e.sql
    const type = as && as !== "null" ? as : e.type
    if (type === "null") return "NULL"
    let value = e.literal.value
    if (type === "number" && typeof value !== "number") {
      value = Number(value)
      if (typeof e.literal.value !== "string" || !Number.isFinite(value) || e.literal.value.trim() === "")
        throw bad(`${e.literal.raw} is not a number`)
    }
    if (type === "time" && !(value instanceof Date)) {
      value = new Date(String(value))
      if (Number.isNaN((value as Date).getTime())) throw bad(`${e.literal.raw} is not a date-time`)
    }
    return this.params.add(value, CAST[type])
  }

  private literal(n: Node): Expr {
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
      const value = new Date(raw)
      if (Number.isNaN(value.getTime())) throw bad(`'${raw}' is not a date-time`)
      return { type: "time", sql: "", literal: { raw, value } }
    }
    if (edm === "Edm.Date") return { type: "date", sql: "", literal: { raw, value: raw } }
    if (edm === "Edm.TimeOfDay") return { type: "timeofday", sql: "", literal: { raw, value: raw } }
    throw bad(`literals of type ${edm} are not supported ('${raw}')`)
  }

  /**
   * A condition reached from $filter's root through and, or and parentheses only. There a false
   * and a null condition both drop the row, so a comparison whose every property goes through one
   * single-valued navigation (Datastream/Thing/properties/district eq 'x') can be a semi-join,
   * EXISTS (SELECT 1 FROM <Datastreams> n WHERE <n is the row's Datastream> AND <the comparison on
   * n>). The planner then filters the few related entities first and reads the rows through the
   * relation's index, instead of running a subquery per row (Observations: 45 s → 1 ms for 864k
   * readings on PostgreSQL, bench/README.md). Elsewhere (under not, as a value) the scalar
   * subquery of member() keeps SQL's null semantics.
   */
  private where(set: EntitySet, alias: string, n: Node): Expr {
    if (n.type === "AndExpression" || n.type === "OrExpression")
      return this.connective(n, (x) => this.where(set, alias, x))
    if (PARENS.has(n.type)) return this.paren(this.where(set, alias, n.value as Node))
    return this.semiJoin(set, alias, n) ?? this.expr(set, alias, n)
  }

  /** `n` as a semi-join on the navigation all its properties go through; undefined: not such a condition. */
  private semiJoin(set: EntitySet, alias: string, n: Node): Expr | undefined {
    const condition =
      n.type in COMPARE ||
      (n.type === "MethodCallExpression" && CONDITIONS.has(String((n.value as { method?: unknown }).method)))
    // `eq null` is true for a missing entity too (the scalar subquery's null): not a semi-join
    if (!condition || nullLiteral(n)) return undefined
    const paths = members(n).map((raw) => raw.split("/").slice(this.strip))
    const name = paths[0]?.[0]
    const rel = name === undefined ? undefined : own(set.relations, name)
    if (!rel || rel.plural || paths.some((p) => p.length < 2 || p[0] !== name || own(set.props, p.join("/"))))
      return undefined
    const target = SETS[rel.target]
    const sub = `n${++this.aliases}`
    this.strip++
    try {
      const inner = this.where(target, sub, n)
      const cond = this.emit(inner)
      // by one column: the related keys are read once (an InitPlan), then the rows by its index
      if (rel.column)
        return {
          type: "bool",
          sql: `${alias}.${rel.column} = ANY (ARRAY(SELECT ${sub}.${rel.column} FROM (${target.from}) ${sub} WHERE ${cond}))`,
        }
      const on = rel.on(sub, (col) => `${alias}.${col}`)
      return { type: "bool", sql: `EXISTS (SELECT 1 FROM (${target.from}) ${sub} WHERE ${on} AND ${cond})` }
    } finally {
      this.strip--
    }
  }

  private connective(n: Node, bool: (x: Node) => Expr): Expr {
    const v = n.value as { left: Node; right: Node }
    const [l, r] = [v.left, v.right].map((x) => {
      const e = bool(x)
      if (e.type !== "bool") throw bad(`'${x.raw}' is not a condition`)
      return this.emit(e)
    })
    return { type: "bool", sql: `(${l} ${n.type === "AndExpression" ? "AND" : "OR"} ${r})` }
  }

  private paren = (e: Expr): Expr => (e.literal ? e : { ...e, sql: `(${e.sql})` })

  /** A property path: a property of the set, or a single-valued navigation then a path. */
  private member(set: EntitySet, alias: string, path: string[]): Expr {
    const prop = own(set.props, path.join("/"))
    if (prop) return { type: prop.type, sql: prop.sql(alias) }
    const rel = own(set.relations, path[0])
    if (rel && !rel.plural && path.length > 1) {
      const target = SETS[rel.target]
      const sub = `n${++this.aliases}`
      const inner = this.member(target, sub, path.slice(1))
      const on = rel.on(sub, (col) => `${alias}.${col}`)
      return { type: inner.type, sql: `(SELECT ${inner.sql} FROM (${target.from}) ${sub} WHERE ${on} LIMIT 1)` }
    }
    if (rel?.plural)
      throw bad(`$filter: '${path.join("/")}' goes through ${path[0]}, a collection (only single-valued paths)`)
    throw bad(
      `unknown property '${path.join("/")}' of ${set.name} (known: ${[
        ...Object.keys(set.props),
        ...Object.entries(set.relations)
          .filter(([, r]) => !r.plural)
          .map(([k]) => `${k}/...`),
      ].join(", ")})`,
    )
  }

  private expr(set: EntitySet, alias: string, n: Node): Expr {
    const v = n.value as Record<string, unknown>
    switch (n.type) {
      case "CommonExpression":
      case "BoolParenExpression":
      case "ParenExpression":
        return this.paren(this.expr(set, alias, n.value as Node))
      case "Literal":
        return this.literal(n)
      case "FirstMemberExpression":
      case "MemberExpression": {
        if (!/^[A-Za-z_][\w]*(\/[A-Za-z_][\w]*)*$/.test(n.raw)) throw bad(`unsupported member expression '${n.raw}'`)
        return this.member(set, alias, n.raw.split("/").slice(this.strip))
      }
      case "AndExpression":
      case "OrExpression":
        return this.connective(n, (x) => this.expr(set, alias, x))
      case "NotExpression":
        return { type: "bool", sql: `(NOT ${this.bool(set, alias, n.value as Node)})` }
      case "NegateExpression": {
        const e = this.expr(set, alias, n.value as Node)
        if (e.type !== "number") throw bad(`'-' needs a number: '${n.raw}'`)
        return { type: "number", sql: `(-${this.emit(e)})` }
      }
      case "MethodCallExpression":
        return this.call(set, alias, String(v.method), (v.parameters as Node[]) ?? [], n.raw)
    }
    if (n.type in COMPARE) {
      const l = this.expr(set, alias, v.left as Node)
      const r = this.expr(set, alias, v.right as Node)
      return this.compare(COMPARE[n.type], l, r, n.raw)
    }
    if (n.type in ARITH) {
      const l = this.expr(set, alias, v.left as Node)
      const r = this.expr(set, alias, v.right as Node)
      for (const e of [l, r]) if (e.type !== "number") throw bad(`arithmetic needs numbers: '${n.raw}'`)
      const [a, b] = [this.emit(l), this.emit(r, "number")]
      const op = ARITH[n.type]
      if (op === "/") return { type: "number", sql: `(${a} / NULLIF(${b}, 0))` }
      if (op === "%") return { type: "number", sql: `mod((${a})::numeric, NULLIF((${b})::numeric, 0))::float8` }
      return { type: "number", sql: `(${a} ${op} ${b})` }
    }
    throw bad(`unsupported expression '${n.raw}' (${n.type})`)
  }

  private bool(set: EntitySet, alias: string, n: Node): string {
    const e = this.expr(set, alias, n)
    if (e.type !== "bool") throw bad(`'${n.raw}' is not a condition`)
    return this.emit(e)
  }

  private compare(op: string, l: Expr, r: Expr, raw: string): Expr {
    if (l.type === "null" || r.type === "null") {
      const other = l.type === "null" ? r : l
      if (op !== "=" && op !== "<>") throw bad(`null can only be compared with eq or ne: '${raw}'`)
      return { type: "bool", sql: `(${this.emit(other)} IS ${op === "=" ? "" : "NOT "}NULL)` }
    }
    // a literal takes its other side's type: result gt '3' compares numbers, as SensorThings does
    let type = l.type
    if (l.type !== r.type) {
      if (l.literal && !r.literal && l.type === "text") type = r.type
      else if (r.literal && !l.literal && r.type === "text") type = l.type
      else if (l.type === "time" && r.type === "date") throw bad(`compare date(...) with a date: '${raw}'`)
      else throw bad(`cannot compare ${l.type} with ${r.type}: '${raw}'`)
    }
    const a = this.emit(l, type)
    const b = this.emit(r, type)
    const collate = type === "text" && op !== "=" && op !== "<>" ? ` COLLATE "C"` : ""
    return { type: "bool", sql: `(${a}${collate} ${op} ${b})` }
  }

  private call(set: EntitySet, alias: string, method: string, args: Node[], raw: string): Expr {
    const want = (n: number) => {
      if (args.length !== n) throw bad(`${method}() takes ${n} argument(s): '${raw}'`)
    }
    const arg = (i: number, type: ExprType) => {
      const e = this.expr(set, alias, args[i])
      const ok = e.type === type || (e.literal && e.type === "text")
      if (!ok) throw bad(`${method}() needs a ${type} as argument ${i + 1}: '${raw}'`)
      return this.emit(e, type)
    }
    const argAny = (i: number) => this.expr(set, alias, args[i])
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
          return { type: "number", sql: `extract(${PARTS[method]} FROM ${this.emit(e)})::float8` }
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
}

function parse(source: string, option: string): Node {
  if (source.trim() === "") throw bad(`${option} is empty`)
  try {
    return defaultParser.filter(source) as unknown as Node
  } catch (e) {
    throw bad(`${option} is not a valid OData expression: ${(e as Error).message} in '${source}'`)
  }
}

/** Splits on `sep` outside parentheses and quoted strings. */
export function splitTop(s: string, sep: string): string[] {
  const out: string[] = []
  let depth = 0
  let quoted = false
  let start = 0
  for (let i = 0; i < s.length; i++) {
    const c = s[i]
    if (c === "'") quoted = !quoted
    else if (quoted) continue
    else if (c === "(") depth++
    else if (c === ")") depth--
    else if (c === sep && depth === 0) {
      out.push(s.slice(start, i))
      start = i + 1
    }
  }
  out.push(s.slice(start))
  return out
}
