// The Store's bulk reads of readings: the export's lines (export-store.ts) and the columnar read
// (reading-columns.ts), apart from store.ts so that the Store interface does not import the
// reading columns (which import the Store's row types).
import type { ExportStore } from "./export-store.js"

/** A value of a reading column (or of a block's array). */
export type BlockValue = number | boolean | null

/**
 * Readings column by column, keyed by ReadingRow's field names but meterId, in READING_COLUMNS
 * order; ts in epoch milliseconds (UTC), every other value as in ReadingRow.
 */
export interface ReadingColumns {
  count: number
  columns: Record<string, BlockValue[]>
}

export interface ReadingColumnsStore {
  /**
   * The same readings as readings(meterId, q), in the same order, as columns: one array per field
   * (a meter's year of 15-minute readings within 100 ms, issue 24).
   */
  readingColumns(meterId: string, q?: { from?: Date; to?: Date; limit?: number }): Promise<ReadingColumns>
}

export interface BulkReadStore extends ExportStore, ReadingColumnsStore {}
