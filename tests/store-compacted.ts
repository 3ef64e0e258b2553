// The store contract on compacted data (issue 24 item 6): a Store whose every call first compacts
// every month there is (store/compaction.ts, with `before` far ahead) and the whole frame ledger
// (store/ledger-blocks.ts), so each read meets its readings in blocks, each write lands as a late
// frame into a compacted month, and each claim meets the ledger in blocks.
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

export function compactingStore(store: Store): Store {
  const compact = async () => {
    await store.compactReadings(EVERYTHING)
    await store.compactLedger(EVERYTHING)
  }
  return new Proxy(store, {
    get(target, key) {
      const v = Reflect.get(target, key, target) as unknown
      if (typeof v !== "function" || PASS_THROUGH.has(key)) return v
      const fn = v as (...a: unknown[]) => unknown
      if (key === "exportLines")
        return async function* (...args: unknown[]) {
          await compact()
          yield* fn.apply(target, args) as AsyncGenerator<string>
        }
      return async (...args: unknown[]) => {
        await compact()
        return fn.apply(target, args)
      }
    },
  })
}
