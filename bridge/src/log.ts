// The processes' logs: pino records, one JSON object a line when stdout is not a terminal (a
// supervisor's journal, a file, a pipe: what log shippers read), one readable line each when it is
// (a person at a terminal). LOG_LEVEL is pino's level; LOG_FORMAT forces either form.
// The readable form is written here, synchronously, in the process: no transport thread whose
// last lines a process.exit() could cut off, and no dependency for ~60 lines of formatting.
import pino, { type DestinationStream, type Logger } from "pino"
import { BRIDGE_DEFAULTS } from "./defaults.js"

/** pino's levels, most severe first; `silent` logs nothing. */
export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const
export type LogLevel = (typeof LOG_LEVELS)[number]
export const LOG_FORMATS = ["json", "pretty"] as const
export type LogFormat = (typeof LOG_FORMATS)[number]

export interface LogSettings {
  level: LogLevel
  /** Unset: pretty when the output is a terminal, JSON otherwise (logFormatFor). */
  format?: LogFormat
}

/** LOG_LEVEL and LOG_FORMAT, with a line for each that cannot work (the form it takes). */
export function readLogSettings(env: NodeJS.ProcessEnv): { settings: LogSettings; problems: string[] } {
  const problems: string[] = []
  const settings: LogSettings = { level: BRIDGE_DEFAULTS.logLevel }
  const level = env.LOG_LEVEL
  if (level) {
    // in any case: LOG_LEVEL=WARN is what an operator means
    if ((LOG_LEVELS as readonly string[]).includes(level.toLowerCase()))
      settings.level = level.toLowerCase() as LogLevel
    else problems.push(`LOG_LEVEL must be one of ${LOG_LEVELS.join(", ")} (got '${level}')`)
  }
  const format = env.LOG_FORMAT
  if (format) {
    if ((LOG_FORMATS as readonly string[]).includes(format)) settings.format = format as LogFormat
    else problems.push(`LOG_FORMAT must be json or pretty, or unset to choose by the terminal (got '${format}')`)
  }
  return { settings, problems }
}

/** The form for an output: readable on a terminal, JSON lines otherwise. */
export const logFormatFor = (out: { isTTY?: boolean }): LogFormat => (out.isTTY ? "pretty" : "json")

/** A logger named `name` writing to `out` (default stdout) in the settings' level and form. */
export function createLogger(
  name: string,
  settings: LogSettings = readLogSettings(process.env).settings,
  out: NodeJS.WritableStream & { isTTY?: boolean } = process.stdout,
): Logger {
  const format = settings.format ?? logFormatFor(out)
  const options = { name, level: settings.level }
  if (format === "json") return out === process.stdout ? pino(options) : pino(options, out as DestinationStream)
  const color = Boolean(out.isTTY) && !process.env.NO_COLOR
  return pino(options, {
    write(line: string) {
      out.write(prettyLine(line, color) + "\n")
    },
  })
}

const LABELS: Record<number, [string, number]> = {
  10: ["TRACE", 90],
  20: ["DEBUG", 90],
  30: ["INFO ", 32],
  40: ["WARN ", 33],
  50: ["ERROR", 31],
  60: ["FATAL", 35],
}
/** Fields every record has, shown in the line's head or not at all. */
const HEAD = new Set(["level", "time", "pid", "hostname", "name", "msg", "meterId", "err"])

/**
 * One JSON record as a readable line: local time, level, logger name, `[meter id]`, message, then
 * the other fields as key=value; an error's stack on the lines after. A line that is not a JSON
 * object is passed through.
 */
export function prettyLine(json: string, color = false): string {
  let rec: Record<string, unknown>
  try {
    rec = JSON.parse(json) as Record<string, unknown>
  } catch {
    return json.trimEnd()
  }
  if (!rec || typeof rec !== "object") return json.trimEnd()
  const paint = (code: number, s: string) => (color ? `\x1b[${code}m${s}\x1b[0m` : s)
  const t = new Date(typeof rec.time === "number" ? rec.time : Date.now())
  const clock = [t.getHours(), t.getMinutes(), t.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":")
  const [label, code] = LABELS[Number(rec.level)] ?? [String(rec.level).padEnd(5), 0]
  const parts = [`${clock}.${String(t.getMilliseconds()).padStart(3, "0")}`, paint(code, label)]
  if (rec.name) parts.push(paint(2, String(rec.name)))
  if (rec.meterId !== undefined) parts.push(paint(36, `[${String(rec.meterId)}]`))
  if (rec.msg !== undefined) parts.push(String(rec.msg))
  for (const [k, v] of Object.entries(rec)) if (!HEAD.has(k)) parts.push(`${k}=${fieldValue(v)}`)
  let line = parts.join(" ")
  const err = rec.err as { message?: string; stack?: string } | string | undefined
  if (typeof err === "string") line += ` err=${fieldValue(err)}`
  else if (err) line += `\n    ${(err.stack ?? err.message ?? JSON.stringify(err)).split("\n").join("\n    ")}`
  return line
}

/** A field's value: bare when it is a word or a number, JSON otherwise (quoted strings, objects). */
function fieldValue(v: unknown): string {
  if (typeof v === "string") return /^[\w.:/@+-]+$/.test(v) ? v : JSON.stringify(v)
  return JSON.stringify(v) ?? String(v)
}
