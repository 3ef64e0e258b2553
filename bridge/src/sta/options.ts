// The query options of a SensorThings request ($top, $skip, $count, $filter, $orderby, $select,
// $expand, $resultFormat), read and checked against the entity set before any SQL; $filter and
// $orderby stay text here, filter.ts translates them.
import { errors } from "../errors.js"
import { SETS } from "./entities.js"
import { own, type EntitySet, type SetName } from "./entity-set.js"
import { splitTop } from "./odata-parse.js"

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
export const FIELDS: Record<SetName, string[]> = {
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
