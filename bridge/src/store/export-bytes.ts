// The bulk export's bytes on PostgreSQL (store/export-rows.ts copySql): COPY writes each line's
// values, joined by commas, and these rewrite the raw bytes as the chunks pass, without a row ever
// becoming a JS object or string: CSV gets its \r\n line ends, NDJSON its keys. Pure: tested
// without a database (tests/store/export-bytes.test.ts), and byte for byte against the former path
// on both engines (tests/store/export-stream.test.ts).
import { READING_COLUMNS } from "./columns.js"

const CR = 13
const LF = 10
const COMMA = 44

/** COPY's lines with \r\n ends. */
export function crlf(chunk: Buffer): Buffer {
  let n = 0
  for (let i = chunk.indexOf(LF); i !== -1; i = chunk.indexOf(LF, i + 1)) n++
  const out = Buffer.allocUnsafe(chunk.length + n)
  let o = 0
  let s = 0
  for (let i = chunk.indexOf(LF); i !== -1; i = chunk.indexOf(LF, s)) {
    o += chunk.copy(out, o, s, i)
    out[o++] = CR
    out[o++] = LF
    s = i + 1
  }
  chunk.copy(out, o, s)
  return out
}

/**
 * COPY's lines of JSON values to NDJSON objects: `{"meterId":` before the first value, `,"ts":`
 * in place of the comma before the second, and so on, `}` before each line end. A line may span
 * chunks: the value index carries over.
 */
export class JsonKeys {
  /** The keys, each with the comma it replaces (the first with the `{` that opens the line), end to end. */
  private readonly flat: Uint8Array
  private readonly starts: Int32Array
  /** What a line's keys and its `}` add to it: the bound of a chunk's growth, per line it touches. */
  private readonly perLine: number
  /** The value the next byte belongs to; -1 at the start of a line, before its `{"meterId":`. */
  private col = -1

  constructor() {
    const keys = READING_COLUMNS.map((c, i) => Buffer.from(`${i ? "," : "{"}"${c.key}":`))
    this.flat = Buffer.concat(keys)
    this.starts = Int32Array.from([0, ...keys.map((_, i) => keys.slice(0, i + 1).reduce((n, k) => n + k.length, 0))])
    this.perLine = this.flat.length + 1
  }

  push(chunk: Buffer): Buffer {
    const { flat, starts } = this
    let lines = 1
    for (let i = chunk.indexOf(LF); i !== -1; i = chunk.indexOf(LF, i + 1)) lines++
    const out = Buffer.allocUnsafe(chunk.length + lines * this.perLine)
    const n = chunk.length
    let o = 0
    let col = this.col
    for (let i = 0; i < n; i++) {
      if (col < 0) {
        // a line's first byte: its first key before it
        for (let j = 0; j < starts[1]; j++) out[o++] = flat[j]
        col = 0
      }
      const b = chunk[i]
      // most bytes (digits, letters, '-', '.', ':') sort above the comma
      if (b > COMMA) out[o++] = b
      else if (b === COMMA) {
        col++
        for (let j = starts[col], end = starts[col + 1]; j < end; j++) out[o++] = flat[j]
      } else if (b === LF) {
        out[o++] = 0x7d // }
        out[o++] = LF
        col = -1
      } else out[o++] = b
    }
    this.col = col
    return out.subarray(0, o)
  }
}
