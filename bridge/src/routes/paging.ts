// Keyset pages for the API's list routes: each answer carries `next`, the `after` of the next page,
// or null on the last page. A list is never cut silently: past `limit` there is always a `next`.
// The store returns rows in time order from a `from` time; the cursor is the sort key of a page's
// last row (time first, then what breaks ties), so a page starts right after it even when many
// rows share its time.
import { errors } from "../errors.js"

export type SortKey = (string | number)[]

/** The `after` query parameter of a paged route. */
export const afterParam = {
  type: "string",
  maxLength: 400,
  pattern: "^[A-Za-z0-9_-]+$",
  description: "the `next` of the previous page (opaque); omit it for the first page",
} as const

export const encodeCursor = (key: SortKey) => Buffer.from(JSON.stringify(key)).toString("base64url")

export function decodeCursor(after: string | undefined): SortKey | undefined {
  if (after === undefined) return undefined
  try {
    const key = JSON.parse(Buffer.from(after, "base64url").toString("utf8")) as unknown
    if (
      Array.isArray(key) &&
      key.length > 0 &&
      Number.isSafeInteger(key[0]) &&
      key.every((k) => typeof k === "string" || Number.isSafeInteger(k))
    )
      return key as SortKey
  } catch {
    // described below
  }
  throw errors.CM_ERR_BAD_QUERY("after must be the `next` of a previous page of this route")
}

function compare(a: SortKey, b: SortKey): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i]
    const y = b[i]
    if (x === y) continue
    if (x === undefined) return -1
    if (y === undefined) return 1
    if (typeof x === "number" && typeof y === "number") return x - y
    return String(x) < String(y) ? -1 : 1
  }
  return 0
}

export interface Page<R> {
  rows: R[]
  next: string | null
}

/**
 * One page of `limit` rows after the cursor. `fetch(from, n)` returns up to n rows from `from`
 * (inclusive) in time order; `key(row)` starts with the row's time in ms. Rows sharing the time of
 * the last fetched row may be cut by the store's limit, so that group is fetched whole (n grows)
 * before the page is cut.
 */
export async function keysetPage<R>(o: {
  fetch: (from: Date | undefined, n: number) => Promise<R[]>
  key: (row: R) => SortKey
  from?: Date
  after?: string
  limit: number
}): Promise<Page<R>> {
  const after = decodeCursor(o.after)
  const cursorTime = after ? new Date(after[0] as number) : undefined
  const from = cursorTime && (!o.from || cursorTime > o.from) ? cursorTime : o.from
  for (let n = o.limit + 1 + (after ? 16 : 0); ; n *= 2) {
    const fetched = await o.fetch(from, n)
    const exhausted = fetched.length < n
    let rows = fetched.map((r) => ({ r, k: o.key(r) }))
    if (!exhausted) {
      const lastTime = rows[rows.length - 1].k[0]
      rows = rows.filter((x) => x.k[0] !== lastTime)
    }
    rows.sort((a, b) => compare(a.k, b.k))
    if (after) rows = rows.filter((x) => compare(x.k, after) > 0)
    if (exhausted || rows.length >= o.limit) {
      const page = rows.slice(0, o.limit)
      const more = rows.length > o.limit || (!exhausted && page.length === o.limit)
      return { rows: page.map((x) => x.r), next: more ? encodeCursor(page[page.length - 1].k) : null }
    }
  }
}
