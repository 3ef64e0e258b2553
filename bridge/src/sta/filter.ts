// OData $filter and $orderby of the SensorThings view, translated to parameterised SQL.
//
// The parser's AST (odata-parse.ts) is walked here and SQL emitted from fixed fragments, every
// literal as a typed parameter ($n::type), every property through the entity set's list
// (entities.ts), operators and functions through their table (odata-functions.ts). Anything else —
// an unknown property, function or operator, a type mismatch — is a 400 CM_ERR_BAD_QUERY naming
// it. So is an expression nested deeper than MAX_DEPTH, a date or time that is not on the calendar
// (odata-literals.ts), and a string compared with a number that is not written as a decimal number
// ('0x10'); a value the data tier cannot evaluate (an overflow) is a 400 in our words
// (evaluationError), never the database's.
import { errors } from "../errors.js"
import { SETS } from "./entities.js"
import { own, type EntitySet } from "./entity-set.js"
import { ARITH, COMPARE, CONDITIONS, call } from "./odata-functions.js"
import { DECIMAL, dateTimeOffset, literal, type Expr, type ExprType } from "./odata-literals.js"
import { MAX_DEPTH, parse, splitTop, tooDeep, type Node } from "./odata-parse.js"

/** Parameters of one statement: values pushed in order, referenced as $1, $2, ... */
export class Params {
  readonly values: unknown[] = []
  add(value: unknown, cast?: string) {
    this.values.push(value)
    return `$${this.values.length}${cast ? `::${cast}` : ""}`
  }
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

/** What a data tier's data exception (SQLSTATE class 22) means, in our words: its text never reaches a client. */
const DATA_EXCEPTIONS: Record<string, string> = {
  "22003": "a number in it is out of range",
  "22008": "a date-time in it is out of range",
  "22007": "a date-time in it is not valid",
  "22P02": "a value in it is not of the expected type",
  "22012": "it divides by zero",
}
export function evaluationError(sqlstate: string) {
  return bad(
    `the query cannot be evaluated: ${DATA_EXCEPTIONS[sqlstate] ?? "a value in it is out of range or not valid"} (SQLSTATE ${sqlstate})`,
  )
}

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
  /** How deep expr() is in the expression being translated, and which option that is. */
  private depth = 0
  private option = "$filter"
  constructor(readonly params: Params) {}

  /** Parses an OData boolean expression into SQL over `alias` of `set`. */
  filter(set: EntitySet, alias: string, source: string): string {
    this.option = "$filter"
    const e = this.where(set, alias, parse(source, "$filter"))
    if (e.type !== "bool") throw bad(`$filter must be a condition (got a ${e.type} expression): ${source}`)
    // a bare true or false is a condition too (OData boolean literals): a parameter, not empty SQL
    return this.emit(e)
  }

  /** `expr [asc|desc], ...` into ORDER BY terms. */
  orderBy(set: EntitySet, alias: string, source: string): string[] {
    return splitTop(source, ",").map((item) => {
      const m = /^(.*?)(?:\s+(asc|desc))?$/i.exec(item.trim())
      if (!m || !m[1]) throw bad(`$orderby: empty item in '${source}'`)
      this.option = "$orderby"
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
      if (typeof e.literal.value !== "string" || !DECIMAL.test(e.literal.value) || !Number.isFinite(value))
        throw bad(
          `${e.literal.raw} is not a number: a string compared with a number must be a decimal number ('3', '2.5')`,
        )
    }
    if (type === "time" && !(value instanceof Date)) {
      value = dateTimeOffset(String(value))
      if (!value) throw bad(`${e.literal.raw} is not a date-time (RFC 3339 on the calendar, with Z or an offset)`)
    }
    return this.params.add(value, CAST[type])
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

  /**
   * `and`/`or`: a run of one operator (id eq 'a' or id eq 'b' or ...) is one level, emitted flat,
   * so a list of 200 ids nests no deeper than one comparison (in the parser's tree, a chain).
   */
  private connective(n: Node, bool: (x: Node) => Expr): Expr {
    const operands: Node[] = []
    for (const stack = [n]; stack.length;) {
      const x = stack.pop()!
      const v = x.value as { left: Node; right: Node }
      if (x.type === n.type) stack.push(v.right, v.left)
      else operands.push(x)
    }
    const sql = operands.map((x) => {
      const e = bool(x)
      if (e.type !== "bool") throw bad(`'${x.raw}' is not a condition`)
      return this.emit(e)
    })
    return { type: "bool", sql: `(${sql.join(n.type === "AndExpression" ? " AND " : " OR ")})` }
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
    // the parser wraps each operand in a CommonExpression: not a level of the user's own
    const level = n.type === "CommonExpression" ? 0 : 1
    this.depth += level
    try {
      if (this.depth > MAX_DEPTH) throw tooDeep(this.option)
      return this.node(set, alias, n)
    } finally {
      this.depth -= level
    }
  }

  private node(set: EntitySet, alias: string, n: Node): Expr {
    const v = n.value as Record<string, unknown>
    switch (n.type) {
      case "CommonExpression":
      case "BoolParenExpression":
      case "ParenExpression":
        return this.paren(this.expr(set, alias, n.value as Node))
      case "Literal":
        return literal(n)
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
      case "MethodCallExpression": {
        const operands = {
          expr: (x: Node) => this.expr(set, alias, x),
          emit: (e: Expr, as?: ExprType) => this.emit(e, as),
        }
        return call(operands, String(v.method), (v.parameters as Node[]) ?? [], n.raw)
      }
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
}
