// A reading as GET /meters/:id/readings returns it (bridge/src/routes/readings.ts readingJson).
import type { ReadingRow } from "../../bridge/src/store/store.js"

export type ApiReading = Omit<ReadingRow, "meterId" | "ts"> & { ts: string }
