// The columns answer (GET /meters/{id}/readings/columns) as JSON bytes: JSON.stringify's text,
// byte for byte (tests/unit/columns-json.test.ts), with each value written by LineWriter instead of
// a string per number. JSON.stringify took 48–76 ms of the 160–197 ms a meter's year took
// (35,040 readings × 16 columns, bench/README.md), its arrays being holey and mixing numbers,
// booleans and nulls.
import { LineWriter } from "./export-blocks.js"
import type { BlockValue, ReadingColumns } from "./reading-columns-store.js"

const [OPEN, CLOSE, COMMA] = ["[", "]", ","].map((c) => c.charCodeAt(0))
/** The most bytes a value and its comma take: JSON's longest number is 24 (-1.2345678901234567e-308). */
const VALUE_MAX = 25

const utf8 = (s: string) => Buffer.from(s, "utf8")

/** `{"meterId":…,"count":…,"columns":{"key":[…],…},"next":…}`, as JSON.stringify writes it. */
export function columnsJson(meterId: string, count: number, columns: ReadingColumns["columns"], next: string | null) {
  const keys = Object.keys(columns)
  const head = utf8(`{"meterId":${JSON.stringify(meterId)},"count":${JSON.stringify(count)},"columns":{`)
  const tail = utf8(`},"next":${JSON.stringify(next)}}`)
  let size = head.length + tail.length
  for (const k of keys) size += JSON.stringify(k).length * 3 + 4 + columns[k].length * VALUE_MAX
  const w = new LineWriter()
  w.start(size)
  w.bytes(head)
  keys.forEach((k, i) => {
    w.bytes(utf8(`${i ? "," : ""}${JSON.stringify(k)}:`))
    w.byte(OPEN)
    values(w, columns[k])
    w.byte(CLOSE)
  })
  w.bytes(tail)
  return w.take()
}

function values(w: LineWriter, vs: readonly BlockValue[]) {
  for (let i = 0; i < vs.length; i++) {
    if (i) w.byte(COMMA)
    w.json(vs[i])
  }
}
