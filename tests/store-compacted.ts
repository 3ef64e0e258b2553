// The store contract on compacted data (issue 24 item 6): a Store whose every call first compacts
// every month there is (store/compaction.ts, with `before` far ahead) and the whole frame ledger
// (store/ledger-blocks.ts), so each read meets its readings in blocks, each write lands as a late
// frame into a compacted month, and each claim meets the ledger in blocks.
//
// A pass is skipped when nothing was written since the last one (only reads in between), as it
// would find no row to compact: the store each call meets is the same. Compaction took 129 of the
// 160 s of the PostgreSQL contract when it ran before each of its 482 calls.
import type { Store } from "../bridge/src/store/store.js"

const EVERYTHING = new Date("9999-01-01T00:00:00Z")
const PASS_THROUGH = new Set<PropertyKey>([
  "compactReadings",
  "compactLedger",
  "close",
  "migrate",
  "ping",
  "constructor",
])
/** Calls that write no reading and no ledger entry; any other call, or the raw `db`, may. */
const READS = new Set<PropertyKey>([
  "getMeter",
  "getMeters",
  "listMeters",
  "meterIds",
  "firstSeen",
  "readings",
  "latest",
  "latestOf",
  "latestJson",
  "consumption",
  "consumptionFromReadings",
  "fleetConsumption",
  "fleetConsumptionByMeter",
  "alarms",
  "countOnline",
  "fleetCounts",
  "deadLetters",
  "countDeadLetters",
  "districts",
  "exportLines",
  "listReleases",
  "getRelease",
  "releaseBytecode",
  "releaseBySha",
  "getRollout",
  "rolloutMeters",
  "rolloutsIn",
  "listRollouts",
  "getDma",
  "dmaMembers",
  "listDmas",
  "linkKey",
])

export function compactingStore(store: Store): Store {
  let written = true
  let pass: Promise<void> | undefined
  const compact = async () => {
    while (pass) await pass
    if (!written) return
    written = false
    pass = (async () => {
      await store.compactReadings(EVERYTHING)
      await store.compactLedger(EVERYTHING)
    })()
    try {
      await pass
    } catch (e) {
      written = true
      throw e
    } finally {
      pass = undefined
    }
  }
  return new Proxy(store, {
    get(target, key) {
      const v = Reflect.get(target, key, target) as unknown
      if (key === "db" && v && typeof v === "object")
        // the contract's own SQL (a DELETE, an UPDATE) counts as a write
        return new Proxy(v, {
          get(db, k) {
            const f = Reflect.get(db, k, db) as unknown
            if (typeof f !== "function") return f
            return (...args: unknown[]) => {
              written = true
              return (f as (...a: unknown[]) => unknown).apply(db, args)
            }
          },
        })
      if (typeof v !== "function" || PASS_THROUGH.has(key)) return v
      const fn = v as (...a: unknown[]) => unknown
      const read = READS.has(key)
      if (key === "exportLines")
        return async function* (...args: unknown[]) {
          await compact()
          yield* fn.apply(target, args) as AsyncGenerator<string>
        }
      return async (...args: unknown[]) => {
        await compact()
        if (!read) written = true
        return fn.apply(target, args)
      }
    },
  })
}
