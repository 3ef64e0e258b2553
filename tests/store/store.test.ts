// The store contract on both engines: PostgreSQL (a private schema) and embedded PGlite.
import { randomBytes } from "node:crypto"
import { openPglite, openPostgres } from "../../bridge/src/store/engines.js"
import { dropSchema, PG_URL } from "../helpers.js"
import { compactingStore } from "../store-compacted.js"
import { describeStoreContract } from "../store-contract.js"

describeStoreContract("postgres", async () => {
  const schema = `t_${randomBytes(6).toString("hex")}`
  const store = await openPostgres(PG_URL, { schema })
  return {
    store,
    cleanup: async () => {
      await store.close()
      await dropSchema(schema)
    },
  }
})

describeStoreContract("pglite", async () => {
  const store = await openPglite(undefined)
  return { store, cleanup: () => store.close() }
})

// the same contract with every month compacted before each call (tests/store-compacted.ts)
describeStoreContract(
  "postgres, compacted",
  async () => {
    const schema = `t_${randomBytes(6).toString("hex")}`
    const raw = await openPostgres(PG_URL, { schema })
    return {
      store: compactingStore(raw),
      cleanup: async () => {
        await raw.close()
        await dropSchema(schema)
      },
    }
  },
  { compacted: true },
)

describeStoreContract(
  "pglite, compacted",
  async () => {
    const raw = await openPglite(undefined)
    return { store: compactingStore(raw), cleanup: () => raw.close() }
  },
  { compacted: true },
)
