// The meter tunables' schema (proto/tunables.json), for Node: each tunable's settings key, proto
// Config field, default, bounds and unit, and the values of a meter by Config field name.
import schema from "../../../proto/tunables.json" with { type: "json" }

export interface Tunable {
  /** DeviceScript settings key (at most 13 characters). */
  key: string
  /** proto Config field, snake_case as in the .proto. */
  field: string
  /** The same field as protobufjs and the firmware name it (camelCase). */
  name: ConfigName
  default: number
  min: number
  max: number
  unit: string
  meaning: string
}

export type ConfigName =
  | "intervalS"
  | "batch"
  | "leakS"
  | "burstMlMin"
  | "backflowMl"
  | "noFlowS"
  | "pressureLowPa"
  | "pressureHighPa"
  | "undervoltageDv"
  | "supplyLossDv"
  | "pulsesPerL"
  | "impPerKwh"
  | "maxFlowLmin"
  | "maxPowerW"
  | "pulseMs"

/** snake_case → camelCase, as protobufjs names fields. */
export const camel = (snake: string) => snake.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase())

export const TUNABLES: readonly Tunable[] = schema.tunables.map((t) => ({ ...t, name: camel(t.field) as ConfigName }))
export const TUNABLE_BY_KEY: ReadonlyMap<string, Tunable> = new Map(TUNABLES.map((t) => [t.key, t]))
export const TUNABLE_BY_NAME = Object.fromEntries(TUNABLES.map((t) => [t.name, t])) as Record<ConfigName, Tunable>

/** Values by Config field name (camelCase); missing ones take their defaults. */
export type TunableValues = Record<ConfigName, number>
export const defaults = (): TunableValues =>
  Object.fromEntries(TUNABLES.map((t) => [t.name, t.default])) as TunableValues
