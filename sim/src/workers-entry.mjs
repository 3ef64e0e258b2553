// Entry of a simulator worker thread (sim/src/workers.ts): TypeScript through tsx, as the CLI runs.
import { register } from "tsx/esm/api"

register()
await import("./workers-thread.ts")
