// Times in query strings: strict RFC 3339, within the range the API serves. `new Date(s)` is not a
// validator: it turns 2020-02-30 into 1 March and accepts years PostgreSQL refuses.
import { errors } from "../errors.js"

/** The earliest time the API accepts (inclusive): the Unix epoch. No meter measured before it. */
export const MIN_TIME = new Date(Date.UTC(1970, 0, 1))
/** The end of the accepted range (exclusive): year 10000. Both engines hold every time between. */
export const MAX_TIME = new Date(Date.UTC(10000, 0, 1))

export const TIME_FORMS =
  "an RFC 3339 date-time (2024-05-01T00:00:00Z, 2024-05-01T02:00:00+02:00) or a date (2024-05-01, midnight UTC)"

/** JSON Schema of a time parameter (validated by parseTime, which knows the calendar). */
export const timeParam = (description: string) =>
  ({ type: "string", description: `${description}; ${TIME_FORMS}, from 1970 to 9999` }) as const

/** The [from, to) parameters of a route that reads a time range. */
export const rangeProps = { from: timeParam("inclusive"), to: timeParam("exclusive") } as const

// RFC 3339 section 5.6: full-date ["T" full-time], time-offset required with a time. Seconds are
// 00-59: a leap second (60) has no instant in JavaScript or PostgreSQL.
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})(?:[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(?:([Zz])|([+-])(\d{2}):(\d{2})))?$/

const isLeap = (y: number) => (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0
const daysIn = (y: number, m: number) => [31, isLeap(y) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1]

/** The instant `raw` names, or undefined when it is not a valid RFC 3339 date-time or date. */
export function rfc3339(raw: string): Date | undefined {
  const m = RFC3339.exec(raw)
  if (!m) return undefined
  const [y, mo, d] = [m[1], m[2], m[3]].map(Number)
  if (mo < 1 || mo > 12 || d < 1 || d > daysIn(y, mo)) return undefined
  if (m[4] === undefined) return utc(y, mo, d, 0, 0, 0, 0)
  const [h, mi, s] = [m[4], m[5], m[6]].map(Number)
  if (h > 23 || mi > 59 || s > 59) return undefined
  let offsetMin = 0
  if (!m[8]) {
    const [oh, om] = [Number(m[10]), Number(m[11])]
    if (oh > 23 || om > 59) return undefined
    offsetMin = (m[9] === "-" ? -1 : 1) * (oh * 60 + om)
  }
  const ms = m[7] ? Math.floor(Number(`0${m[7]}`) * 1000) : 0
  return new Date(utc(y, mo, d, h, mi, s, ms).getTime() - offsetMin * 60_000)
}

/** Date.UTC maps years 0-99 to 1900-1999; setUTCFullYear does not. */
function utc(y: number, mo: number, d: number, h: number, mi: number, s: number, ms: number): Date {
  const t = new Date(Date.UTC(2000, mo - 1, d, h, mi, s, ms))
  t.setUTCFullYear(y)
  return t
}

/** A query time: undefined when absent; a 400 CM_ERR_BAD_TIME when invalid or out of range. */
export function parseTime(name: string, raw: string | undefined): Date | undefined {
  if (raw === undefined) return undefined
  const t = rfc3339(raw)
  if (!t) throw errors.CM_ERR_BAD_TIME(name, TIME_FORMS, raw)
  if (t < MIN_TIME || t >= MAX_TIME)
    throw errors.CM_ERR_BAD_TIME(name, `from ${MIN_TIME.toISOString()} up to year 9999`, raw)
  return t
}

/** A [from, to) range; from must come before to. */
export function parseRange(q: { from?: string; to?: string }): { from?: Date; to?: Date } {
  const from = parseTime("from", q.from)
  const to = parseTime("to", q.to)
  if (from && to && from >= to) throw errors.CM_ERR_BAD_QUERY("from must be before to")
  return { from, to }
}

/** An IANA time zone name the runtime knows; a 400 CM_ERR_BAD_QUERY otherwise. */
export function checkTimeZone(tz: string | undefined): string | undefined {
  if (tz === undefined) return undefined
  try {
    new Intl.DateTimeFormat("en", { timeZone: tz })
  } catch {
    throw errors.CM_ERR_BAD_QUERY(`unknown time zone ${tz}`)
  }
  return tz
}
