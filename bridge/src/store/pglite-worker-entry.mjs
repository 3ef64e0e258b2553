// Entry of the PGlite worker thread (pglite-thread.ts): TypeScript through tsx, as the bridge runs.
import { register } from "tsx/esm/api"

register()
await import("./pglite-worker.ts")
