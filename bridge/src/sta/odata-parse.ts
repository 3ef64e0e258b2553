// The text of $filter and $orderby (and of $expand's lists) read into an OData syntax tree, before
// any of it becomes SQL (filter.ts).
//
// The expression is parsed by @odata/parser (npm, MIT; a maintained TypeScript fork of the
// OData v4 ABNF parser odata-v4-parser). Chosen over @balena/odata-parser, which is better kept
// but does not parse the bare ISO 8601 date-time literals that SensorThings filters use
// (`phenomenonTime gt 2026-01-01T00:00:00Z`), and over odata-parser / odata-v4-parser, whose
// last releases are years old and untyped. The parser only yields an AST. An expression it cannot
// read, or one nested deeper than MAX_DEPTH, is a 400 CM_ERR_BAD_QUERY.
import { defaultParser } from "@odata/parser"
import { errors } from "../errors.js"

/** A node of the parser's syntax tree. */
export interface Node {
  type: string
  value: unknown
  raw: string
}

const bad = (what: string) => errors.CM_ERR_BAD_QUERY(what)

/**
 * How deep an expression may nest: parentheses, `not`, `and`/`or` (a run of one of them is one
 * level), comparisons, arithmetic and function calls, each a level. Deeper is a 400 before the parser or the data tier recurse
 * into it (300 nested `not` exhausted the embedded engine's stack).
 */
export const MAX_DEPTH = 64

export const tooDeep = (option: string) =>
  bad(`${option} nests deeper than ${MAX_DEPTH} levels (parentheses, not, and/or, function calls): simplify it`)

export function parse(source: string, option: string): Node {
  if (source.trim() === "") throw bad(`${option} is empty`)
  // the parser recurses once per parenthesis: refuse deep nesting before it does
  if (parenDepth(source) > MAX_DEPTH) throw tooDeep(option)
  try {
    return defaultParser.filter(source) as unknown as Node
  } catch (e) {
    if (e instanceof RangeError) throw tooDeep(option) // the parser's own recursion (a long run of `not`)
    throw bad(`${option} is not a valid OData expression: ${(e as Error).message} in '${source}'`)
  }
}

/** The deepest nesting of parentheses outside quoted strings. */
function parenDepth(s: string) {
  let depth = 0
  let max = 0
  let quoted = false
  for (const c of s) {
    if (c === "'") quoted = !quoted
    else if (quoted) continue
    else if (c === "(") max = Math.max(max, ++depth)
    else if (c === ")") depth--
  }
  return max
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
