// The Store's bulk export (store/export-rows.ts implements it), apart from the query so that the
// Store interface does not import the reading columns (which import the Store's row types).
export type ExportFormat = "csv" | "ndjson"

export interface ExportStore {
  /**
   * Every meter's readings with ts in [from, to) as the export's lines (CSV without its header, or
   * NDJSON, UTF-8): meters in meter id order (as meterIds()), each meter's readings by (ts, boot,
   * seq, idx). Chunks of whole lines, up to `batch` of them, where the engine reads in batches
   * (PGlite); bytes as the connection delivers them, lines cut anywhere, where it streams
   * (PostgreSQL's COPY). Stopping the iteration (return()) ends the query and frees its connection.
   */
  exportLines(from: Date, to: Date, format: ExportFormat, batch?: number): AsyncGenerator<string | Uint8Array>
}
