// What an entity set of the SensorThings view is, as filter.ts and query.ts read it: a SQL view,
// its filterable properties, its relations and its JSON (EntitySet). Also the small pieces the
// set definitions (meter-sets.ts, measurement-sets.ts) are built from.

export type PropType = "text" | "number" | "time" | "bool"

/** A filterable, orderable property: its SQL expression over the set's alias, and its type. */
export interface Prop {
  sql: (a: string) => string
  type: PropType
}

/** The SQL of a column of the source entity: `alias.col` in a filter, a parameter for a fetched row. */
export type Ref = (col: string) => string

export interface Relation {
  target: SetName
  plural: boolean
  /** SQL true for the target rows (alias t) related to the source entity. */
  on: (t: string, s: Ref) => string
  /** Set when `on` is this one column equal on both sides (same()). */
  column?: string
  /** The most target rows one source entity can have (a plural relation; unset: unbounded), for $expand's cost. */
  max?: number
  /** The source column naming the one meter whose target rows the relation selects (a page by time: byMeterTime). */
  meter?: string
}

export type Row = Record<string, unknown>

export interface EntitySet {
  name: SetName
  /** SELECT ... of the view's columns (a subquery; simple enough for the planner to flatten). */
  from: string
  /** The same rows and columns in a form faster to count, when there is one (unordered). */
  countFrom?: string
  /**
   * Set when one meter's rows can be read by phenomenonTime window (sta/time-windows.ts): `from`
   * selects the set's columns for meter m with ts in [t0, t1) (SQL placeholders), `span` the
   * meter's first and last ts (columns lo, hi; NULL without rows).
   */
  byMeterTime?: { from: (m: string, t0: string, t1: string) => string; span: (m: string) => string }
  /** The columns that identify a row, and an entity id's values for them (undefined: no such id). */
  keyCols: string[]
  key: (id: string) => unknown[] | undefined
  /** Stable order: the tie-breakers appended to every $orderby, and the default order. */
  order: (a: string) => string[]
  props: Record<string, Prop>
  relations: Record<string, Relation>
  id: (r: Row) => string
  /** The entity's properties (without control information and navigation links). */
  json: (r: Row) => Record<string, unknown>
}

export const SET_NAMES = [
  "Things",
  "Locations",
  "HistoricalLocations",
  "Datastreams",
  "Sensors",
  "ObservedProperties",
  "Observations",
  "FeaturesOfInterest",
] as const
export type SetName = (typeof SET_NAMES)[number]

export const isSetName = (s: string): s is SetName => (SET_NAMES as readonly string[]).includes(s)

/**
 * A relation or property named by the request, or undefined: only the object's own keys, so
 * `constructor` or `__proto__` never reach Object.prototype.
 */
export const own = <T>(o: Record<string, T>, key: string): T | undefined => (Object.hasOwn(o, key) ? o[key] : undefined)

/** A SQL string literal of one of the set definitions' constants (never of request input). */
export const lit = (s: string) => `'${s.replace(/'/g, "''")}'`

/** A text property: one column of the view. */
export const text = (col: string): Prop => ({ sql: (a) => `${a}.${col}`, type: "text" })
/** A relation by one column equal on both sides: `...same("meter_id")`. */
export const same = (column: string) => ({ on: (t: string, s: Ref) => `${t}.${column} = ${s(column)}`, column })

/** Column values as JSON: null stays null. */
export const num = (v: unknown) => (v === null || v === undefined ? null : Number(v))
export const iso = (v: unknown) => (v === null || v === undefined ? null : new Date(v as Date).toISOString())
export const str = (v: unknown) => (v === null || v === undefined ? null : String(v))
