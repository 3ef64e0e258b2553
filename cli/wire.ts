// Explains a protobuf frame byte by byte against the contract (proto/citymeter/v1/citymeter.proto):
// offset, tag, field number and name, wire type, value with its unit. Driven by the .proto itself,
// so a field added to the contract is explained without touching this file; a field the contract
// does not know is shown as unknown, with its raw value.
import { join } from "node:path"
import protobuf from "protobufjs"
import { paths } from "../sim/src/paths.js"

export const PROTO_FILE = join(paths.root, "proto/citymeter/v1/citymeter.proto")

let root: protobuf.Root | undefined
export function contract(): protobuf.Root {
  // keepCase: the contract's snake_case names carry the units (volume_ml, pressure_pa)
  root ??= new protobuf.Root().loadSync(PROTO_FILE, { keepCase: true })
  return root
}

export const WIRE_TYPES: Record<number, string> = {
  0: "varint",
  1: "i64",
  2: "len",
  3: "sgroup",
  4: "egroup",
  5: "i32",
}

export class WireError extends Error {}

function readVarint(b: Uint8Array, pos: number): { value: bigint; next: number } {
  let value = 0n
  for (let shift = 0n, i = pos; i < b.length && shift < 70n; i++, shift += 7n) {
    value |= BigInt(b[i] & 0x7f) << shift
    if (!(b[i] & 0x80)) return { value, next: i + 1 }
  }
  throw new WireError(`truncated varint at offset ${pos}`)
}

const zigzag = (v: bigint) => (v >> 1n) ^ -(v & 1n)
const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join(" ")

/** Unit of an integer field, from the suffix of its name (the contract's naming rule). */
export function unitOf(name: string): string {
  const m = /_(ml_min|ml|wh|pa|w|dv|s|ms)$/.exec(name)
  return m ? ({ ml_min: "mL/min", ml: "mL", wh: "Wh", pa: "Pa", w: "W", dv: "dV", s: "s", ms: "ms" }[m[1]] ?? "") : ""
}

/** A value with its unit, and a more readable form where one helps (L, kWh, kPa, V, minutes, dates). */
export function withUnit(name: string, v: number | bigint, synced?: boolean): string {
  const n = Number(v)
  const unit = unitOf(name)
  const base = `${v}${unit ? " " + unit : ""}`
  const extra = (() => {
    switch (unit) {
      case "mL":
        return Math.abs(n) >= 1000 ? `${n / 1000} L` : ""
      case "Wh":
        return Math.abs(n) >= 1000 ? `${n / 1000} kWh` : ""
      case "Pa":
        return Math.abs(n) >= 1000 ? `${n / 1000} kPa` : ""
      case "dV":
        return `${n / 10} V`
      case "ms":
        return name === "unix_ms" ? new Date(n).toISOString() : ""
      case "s":
        if ((name === "start_s" || name === "time_s") && synced !== undefined)
          return synced ? `Unix time ${new Date(n * 1000).toISOString()}` : "device uptime (clock not synced)"
        if (n >= 60 && name.endsWith("interval_s")) return n % 60 === 0 ? `${n / 60} min` : ""
        return ""
      default:
        return ""
    }
  })()
  return extra ? `${base} (${extra})` : base
}

export interface WireLine {
  depth: number
  offset: number
  bytes: Uint8Array
  field: string
  wire: string
  value: string
}

function scalarFromVarint(f: protobuf.Field, raw: bigint): { n: bigint; text: string } {
  switch (f.type) {
    case "sint32":
    case "sint64": {
      const n = zigzag(raw)
      return { n, text: `${n} (zigzag ${raw})` }
    }
    case "int32":
    case "int64": {
      const n = BigInt.asIntN(64, raw)
      return { n, text: String(n) }
    }
    case "bool":
      return { n: raw, text: raw ? "true" : "false" }
    default:
      if (f.resolvedType instanceof protobuf.Enum) {
        const name = f.resolvedType.valuesById[Number(raw)]
        return { n: raw, text: name ? `${name} (${raw})` : `${raw} (not in ${f.resolvedType.name})` }
      }
      return { n: raw, text: String(raw) }
  }
}

const VARINT_TYPES = new Set(["uint32", "uint64", "int32", "int64", "sint32", "sint64", "bool"])

/** Walks one message; `lines` gets one entry per field (nested messages indented). */
export function explainMessage(type: protobuf.Type, b: Uint8Array, base = 0, depth = 0, lines: WireLine[] = []) {
  type.resolveAll()
  const own: { line: WireLine; field?: protobuf.Field; n?: bigint }[] = []
  let pos = 0
  while (pos < b.length) {
    const start = pos
    const tag = readVarint(b, pos)
    pos = tag.next
    const no = Number(tag.value >> 3n)
    const wt = Number(tag.value & 7n)
    if (no === 0) throw new WireError(`field number 0 at offset ${base + start}`)
    const f = type.fieldsById[no] as protobuf.Field | undefined
    const label = f ? `${no} ${f.name}` : `${no} (unknown to ${type.name})`
    const line: WireLine = {
      depth,
      offset: base + start,
      bytes: b.subarray(start, pos),
      field: label,
      wire: "",
      value: "",
    }
    lines.push(line)
    if (wt === 0) {
      const v = readVarint(b, pos)
      line.bytes = b.subarray(start, v.next)
      pos = v.next
      line.wire = "varint"
      if ((f && VARINT_TYPES.has(f.type)) || f?.resolvedType instanceof protobuf.Enum) {
        const s = scalarFromVarint(f, v.value)
        line.value = s.text
        own.push({ line, field: f, n: s.n })
      } else line.value = `${v.value}${f ? ` (expected ${f.type})` : ""}`
    } else if (wt === 1 || wt === 5) {
      const size = wt === 1 ? 8 : 4
      if (pos + size > b.length) throw new WireError(`truncated ${WIRE_TYPES[wt]} at offset ${base + start}`)
      const dv = new DataView(b.buffer, b.byteOffset + pos, size)
      line.bytes = b.subarray(start, pos + size)
      line.wire = WIRE_TYPES[wt]
      line.value = String(wt === 1 ? dv.getBigUint64(0, true) : dv.getUint32(0, true))
      pos += size
    } else if (wt === 2) {
      const len = readVarint(b, pos)
      const dataStart = len.next
      const dataEnd = dataStart + Number(len.value)
      if (dataEnd > b.length)
        throw new WireError(`length ${len.value} at offset ${base + start} runs past the end of the frame`)
      const data = b.subarray(dataStart, dataEnd)
      line.bytes = b.subarray(start, dataStart)
      line.wire = `len ${data.length}`
      pos = dataEnd
      if (f?.resolvedType instanceof protobuf.Type) {
        line.value = `${f.resolvedType.name} {`
        explainMessage(f.resolvedType, data, base + dataStart, depth + 1, lines)
        lines.push({ depth, offset: base + dataEnd, bytes: new Uint8Array(0), field: "", wire: "", value: "}" })
      } else if (f?.type === "string") {
        line.bytes = b.subarray(start, dataEnd)
        line.value = JSON.stringify(new TextDecoder().decode(data))
      } else if (f?.repeated && VARINT_TYPES.has(f.type)) {
        line.bytes = b.subarray(start, dataEnd)
        const values: string[] = []
        for (let p = 0; p < data.length;) {
          const v = readVarint(data, p)
          p = v.next
          const s = scalarFromVarint(f, v.value)
          values.push(withUnit(f.name, s.n))
        }
        line.wire = `len ${data.length}, packed`
        line.value = `${values.length} values: ${values.join(", ")}`
      } else {
        line.bytes = b.subarray(start, dataEnd)
        line.value = `bytes ${hex(data)}`
      }
    } else {
      throw new WireError(
        `wire type ${wt} (${WIRE_TYPES[wt] ?? "invalid"}) at offset ${base + start} is not used by citymeter`,
      )
    }
  }
  // units last: a timestamp's meaning depends on time_synced, which may come after it
  const synced = own.find((o) => o.field?.name === "time_synced")?.n
  for (const o of own)
    if (o.field && o.n !== undefined && o.field.type !== "bool" && !(o.field.resolvedType instanceof protobuf.Enum)) {
      const zig = o.field.type.startsWith("sint") ? ` (zigzag ${o.line.value.replace(/.*zigzag (\d+)\)$/, "$1")})` : ""
      o.line.value =
        withUnit(
          o.field.name,
          o.n,
          synced === undefined ? (type.fields.time_synced ? false : undefined) : synced !== 0n,
        ) + zig
    }
  return lines
}

export function renderWire(lines: WireLine[]): string {
  const rows = lines.map((l) => {
    const ind = "  ".repeat(l.depth)
    const bytes = l.bytes.length > 8 ? hex(l.bytes.subarray(0, 7)) + " …" : hex(l.bytes)
    return [
      String(l.offset),
      ind + bytes,
      l.field ? ind + l.field : "",
      l.wire,
      l.value ? (l.field ? "" : ind) + l.value : "",
    ]
  })
  const head = ["offset", "bytes", "field", "wire type", "value"]
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (i === 4 ? 0 : r[i].length))))
  const fmt = (r: string[]) =>
    r
      .map((c, i) => (i === 4 ? c : c.padEnd(width[i])))
      .join("  ")
      .trimEnd()
  return [fmt(head), ...rows.map(fmt)].join("\n")
}
