// A reading's columns, described once: the SQL tables (readings, meter_latest), the row mapping,
// the engine's JSON, the CSV export and the bounds every value is checked against before it is
// stored all come from READING_COLUMNS. A value's bounds are the intersection of what the wire
// carries (the .proto type), what the column holds (the SQL type), what a JS number holds exactly
// (2^53) and what the channel can physically measure (PLAUSIBLE, bridge/src/bounds.ts).
import { PLAUSIBLE, PROTO_RANGE, type ProtoType } from "../bounds.js"
import type { ReadingRow } from "./store.js"

export type SqlType = "text" | "timestamptz" | "integer" | "bigint" | "boolean"

/** Range of each SQL type. bigint is bounded by JS numbers: integers are exact up to 2^53 − 1. */
export const SQL_RANGE: Record<"integer" | "bigint", [number, number]> = {
  integer: [-(2 ** 31), 2 ** 31 - 1],
  bigint: [-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
}

export interface ReadingColumn {
  key: keyof ReadingRow
  /** snake_case column name. */
  column: string
  sql: SqlType
  nullable: boolean
  /** Where the value comes from on the wire (proto field), for the value's bounds. */
  proto?: ProtoType
  /** Physical bounds of the channel; per-interval amounts are also bounded by rate (codec/payload.ts). */
  plausible?: [number, number]
  /**
   * The migration step (its name, store/migrations.ts) that added the column to readings and
   * meter_latest, with the value existing rows get; absent for the columns of step 1.
   */
  added?: { step: string; default: string }
  /** What the value is, for people (the data dictionary, GET /export/dictionary.json). */
  meaning: string
  /** Unit as a UCUM code (https://ucum.org): mL, W.h, W, dV, Pa, s; absent for ids, times and flags. */
  unit?: string
  /** OBIS code (IEC 62056-6-1, value groups A-B:C.D.E) of an electricity quantity. */
  obis?: string
}

const col = (
  key: keyof ReadingRow,
  sql: SqlType,
  meaning: string,
  o: Partial<Omit<ReadingColumn, "key" | "sql" | "meaning">> = {},
): ReadingColumn => ({
  key,
  column: key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`),
  sql,
  nullable: false,
  meaning,
  ...o,
})

/** OBIS codes (IEC 62056-6-1) of the electricity quantities a reading carries. */
export const OBIS = {
  /** Active energy import (+A), total register: 1-0:1.8.0. */
  activeEnergyImport: "1-0:1.8.0",
  /** Active power import (+P): 1-0:1.7.0. */
  activePower: "1-0:1.7.0",
  /** Voltage of phase L1: 1-0:32.7.0. */
  voltageL1: "1-0:32.7.0",
} as const

/** The migration step adding ts_estimated; rows stored before it cannot be told apart: false. */
export const TS_ESTIMATED_STEP = "readings.ts_estimated"
/** The migration step adding after_reboot (issue 20); rows stored before it: false (not known). */
export const AFTER_REBOOT_STEP = "readings.after_reboot"

export const READING_COLUMNS: readonly ReadingColumn[] = [
  col("meterId", "text", "Meter id (the registry's; MQTT topic level)"),
  col("ts", "timestamptz", "Start of the interval, ISO 8601 UTC"),
  col("intervalS", "integer", "Length of the interval", { unit: "s", proto: "uint32", plausible: [1, 86400] }),
  col("boot", "bigint", "The meter's boot count when it made the frame", { proto: "uint32" }),
  col("seq", "bigint", "The frame's sequence number within the boot", { proto: "uint32" }),
  col("idx", "integer", "The interval's position in its frame (0 = oldest)", { plausible: [0, 95] }),
  // proto WaterSeries
  col("volumeMl", "bigint", "Water volume that flowed forward in the interval", {
    unit: "mL",
    nullable: true,
    proto: "uint32",
  }),
  col("reverseMl", "bigint", "Water volume that flowed backward in the interval", {
    unit: "mL",
    nullable: true,
    proto: "uint32",
  }),
  col("waterTotalMl", "bigint", "Water register (cumulative forward volume) at the end of the interval", {
    unit: "mL",
    nullable: true,
    proto: "uint64",
    plausible: [0, PLAUSIBLE.waterTotalMl],
  }),
  // proto ElectricitySeries
  col("energyWh", "bigint", "Active energy imported in the interval (the increase of the 1-0:1.8.0 register)", {
    unit: "W.h",
    nullable: true,
    proto: "uint32",
  }),
  col("energyTotalWh", "bigint", "Active energy import register (+A) at the end of the interval", {
    unit: "W.h",
    obis: OBIS.activeEnergyImport,
    nullable: true,
    proto: "uint64",
    plausible: [0, PLAUSIBLE.energyTotalWh],
  }),
  col("powerW", "integer", "Mean active power over the interval (negative: exported)", {
    unit: "W",
    obis: OBIS.activePower,
    nullable: true,
    proto: "sint32",
    plausible: [-PLAUSIBLE.powerW, PLAUSIBLE.powerW],
  }),
  col("voltageDv", "integer", "Mean RMS voltage of phase L1 over the interval, in decivolts (2300 = 230.0 V)", {
    unit: "dV",
    obis: OBIS.voltageL1,
    nullable: true,
    proto: "uint32",
    plausible: [0, PLAUSIBLE.voltageDv],
  }),
  // proto PressureSeries (min and max are avg minus/plus the uint32 deltas)
  col("pressureMinPa", "integer", "Lowest water pressure in the interval", {
    unit: "Pa",
    nullable: true,
    plausible: [0, PLAUSIBLE.pressurePa],
  }),
  col("pressureAvgPa", "integer", "Mean water pressure over the interval", {
    unit: "Pa",
    nullable: true,
    proto: "uint32",
    plausible: [0, PLAUSIBLE.pressurePa],
  }),
  col("pressureMaxPa", "integer", "Highest water pressure in the interval", {
    unit: "Pa",
    nullable: true,
    plausible: [0, PLAUSIBLE.pressurePa],
  }),
  col("timeSynced", "boolean", "The meter's clock was synchronised when it made the frame"),
  col("backfill", "boolean", "Sent late, from the meter's queue (after an outage)"),
  col("tsEstimated", "boolean", "ts is the bridge's estimate from the frame's arrival, not a measured time", {
    added: { step: TS_ESTIMATED_STEP, default: "false" },
  }),
  col(
    "afterReboot",
    "boolean",
    "The meter's first interval after it restarted (proto ReadingBatch.after_reboot): pulses it would have counted while off or restarting are missing, so the consumption since the previous reading may be incomplete",
    { added: { step: AFTER_REBOOT_STEP, default: "false" } },
  ),
]

/** The bounds a column's value must lie in: its SQL type, its proto type and its plausibility. */
export function columnRange(c: ReadingColumn): [number, number] | undefined {
  if (c.sql !== "integer" && c.sql !== "bigint") return undefined
  let [lo, hi] = SQL_RANGE[c.sql]
  for (const r of [c.proto ? PROTO_RANGE[c.proto] : undefined, c.plausible])
    if (r) [lo, hi] = [Math.max(lo, r[0]), Math.min(hi, r[1])]
  return [lo, hi]
}

const RANGES = READING_COLUMNS.flatMap((c) => {
  const r = columnRange(c)
  return r ? [{ c, lo: r[0], hi: r[1] }] : []
})

/** The first value of the row outside its column's bounds, as a message; undefined when all fit. */
export function outOfRange(r: ReadingRow): string | undefined {
  // indexed loop, no destructuring: every stored reading passes here
  for (let i = 0; i < RANGES.length; i++) {
    const { c, lo, hi } = RANGES[i]
    const v = r[c.key] as number | null
    if (v === null && c.nullable) continue
    if (typeof v !== "number" || !Number.isInteger(v) || v < lo || v > hi)
      return `${c.column} ${v} outside ${lo}..${hi} (interval ${r.idx})`
  }
  return undefined
}

export const COLUMN_NAMES = READING_COLUMNS.map((c) => c.column)

/** A column's definition in CREATE TABLE or ADD COLUMN. */
export const columnDdl = (c: ReadingColumn) =>
  `${c.column} ${c.sql}${c.added ? ` DEFAULT ${c.added.default}` : ""}${c.nullable ? "" : " NOT NULL"}`

/** Column definitions for CREATE TABLE. */
export const COLUMN_DDL = READING_COLUMNS.map(columnDdl).join(", ")

/** A column for people: its unit (UCUM) and OBIS code when it has them, then what it means. */
export const describeColumn = (c: ReadingColumn) =>
  `${[c.unit && `[${c.unit}]`, c.obis && `OBIS ${c.obis}`].filter(Boolean).join(" ")}${c.unit || c.obis ? " " : ""}${c.meaning}`

/** The reading fields, one line each, for API descriptions (OpenAPI) and the README. */
export const READING_FIELDS_DOC = READING_COLUMNS.map((c) => `\`${c.key}\`: ${describeColumn(c)}`).join("; ")

/**
 * JSON Schema (OpenAPI 3.0) of a reading as the API answers it: each field typed, described with
 * its unit and OBIS code, null where the meter does not measure it. `omit` leaves fields out
 * (the per-meter routes give meterId once, beside the readings).
 */
export function readingJsonSchema(omit: readonly (keyof ReadingRow)[] = []) {
  const type = (c: ReadingColumn) =>
    c.sql === "text" || c.sql === "timestamptz" ? "string" : c.sql === "boolean" ? "boolean" : "integer"
  return {
    type: "object",
    required: READING_COLUMNS.filter((c) => !omit.includes(c.key)).map((c) => c.key),
    properties: Object.fromEntries(
      READING_COLUMNS.filter((c) => !omit.includes(c.key)).map((c) => [
        c.key,
        {
          type: type(c),
          ...(c.sql === "timestamptz" ? { format: "date-time" } : {}),
          ...(c.nullable ? { nullable: true } : {}),
          description: describeColumn(c),
        },
      ]),
    ),
  } as const
}

/** JSON Schema of /meters/{id}/readings/columns' `columns`: each field but meterId as an array. */
export function readingColumnsSchema() {
  const row = readingJsonSchema(["meterId"])
  return {
    type: "object",
    required: row.required,
    properties: Object.fromEntries(
      Object.entries(row.properties).map(([k, p]) => {
        const { format: _f, description, ...item } = p as { format?: string; description?: string; type: string }
        return [
          k,
          {
            type: "array",
            description: k === "ts" ? "Start of the interval, epoch milliseconds (UTC)" : description,
            items: k === "ts" ? { type: "integer" } : item,
          },
        ]
      }),
    ),
  }
}
