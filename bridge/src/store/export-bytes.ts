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
  private readonly keys = READING_COLUMNS.map((c, i) => Buffer.from(`${i ? "," : "{"}"${c.key}":`))
  /** What a line's keys and its `}` add to it: the bound of a chunk's growth, per line it touches. */
  private readonly perLine = this.keys.reduce((n, k) => n + k.length, 1)
  /** The value the next byte belongs to; -1 at the start of a line, before its `{"meterId":`. */
  private col = -1

  push(chunk: Buffer): Buffer {
    const keys = this.keys
    let lines = 1
    for (let i = chunk.indexOf(LF); i !== -1; i = chunk.indexOf(LF, i + 1)) lines++
    const out = Buffer.allocUnsafe(chunk.length + lines * this.perLine)
    let o = 0
    let col = this.col
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i]
      if (col < 0) {
        col = 0
        o += keys[0].copy(out, o)
      }
      if (b === COMMA) {
        const k = keys[++col]
        for (let j = 0; j < k.length; j++) out[o++] = k[j]
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
