// The export's former paths, for the test that the streamed query writes the same bytes and for the
// bench that times them: one query per meter and page (routes/export.ts perMeterLines), and the
// whole file as one query of lines FETCHed from a cursor, 5,000 at a time (the export before COPY).
import { perMeterLines } from "../bridge/src/routes/export.js"
import type { Db } from "../bridge/src/store/db.js"
import { EXPORT_BATCH, exportSql } from "../bridge/src/store/export-rows.js"
import type { ExportFormat } from "../bridge/src/store/export-store.js"
import type { Store } from "../bridge/src/store/store.js"

/** The same store, its export reading through another path. */
const withExport = (store: Store, lines: Store["exportLines"]): Store =>
  new Proxy(store, {
    get(target, key) {
      if (key === "exportLines") return lines
      const value = Reflect.get(target, key, target) as unknown
      return typeof value === "function" ? value.bind(target) : value
    },
  })

/** The same store, its export reading one query per meter and page. */
export const formerExportPath = (store: Store): Store =>
  withExport(store, (from: Date, to: Date, format: ExportFormat) => perMeterLines(store, from, to, format))

/**
 * The same store (PostgreSQL: `reads` has sessions), its export one server-side cursor over the
 * engine-written lines, FETCHed batch by batch, each FETCH a read statement of its own.
 */
export const cursorExportPath = (store: Store, reads: Db): Store =>
  withExport(store, (from: Date, to: Date, format: ExportFormat) => cursorLines(reads, from, to, format))

async function* cursorLines(reads: Db, from: Date, to: Date, format: ExportFormat, batch = EXPORT_BATCH) {
  if (!reads.session) throw new Error("the cursor path needs a session (PostgreSQL)")
  const s = await reads.session()
  let done = false
  try {
    await s.query(`BEGIN READ ONLY`)
    await s.query(`DECLARE export_rows NO SCROLL CURSOR FOR ${exportSql(format)}`, [from, to])
    for (;;) {
      const { rows } = await s.query<{ line: string }>(`FETCH ${batch} FROM export_rows`)
      if (rows.length) yield rows.map((r) => r.line).join("")
      if (rows.length < batch) break
    }
    done = true
  } finally {
    await s.query(done ? `COMMIT` : `ROLLBACK`).then(
      () => s.release(),
      (e: Error) => s.release(e),
    )
  }
}
