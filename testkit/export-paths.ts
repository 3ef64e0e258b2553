// The export's former path (one query per meter and page, routes/export.ts perMeterLines), for the
// test that the streamed query writes the same bytes and for the bench that times both.
import { perMeterLines } from "../bridge/src/routes/export.js"
import type { ExportFormat } from "../bridge/src/store/export-store.js"
import type { Store } from "../bridge/src/store/store.js"

/** The same store, its export reading through the former path. */
export const formerExportPath = (store: Store): Store =>
  new Proxy(store, {
    get(target, key) {
      if (key === "exportLines")
        return (from: Date, to: Date, format: ExportFormat) => perMeterLines(target, from, to, format)
      const value = Reflect.get(target, key, target) as unknown
      return typeof value === "function" ? value.bind(target) : value
    },
  })
