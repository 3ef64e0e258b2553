// `citymeter decode <hex|file>`: a captured frame explained field by field, then the bridge's view
// of it (the same decoder and checks the bridge applies, with its CM_ERR_* code when it would reject).
import { existsSync, readFileSync } from "node:fs"
import protobuf from "protobufjs"
import { decodeUplink } from "../bridge/src/codec.js"
import { FrameError } from "../bridge/src/codec/frames.js"
import { UP_KINDS, type UpKind } from "../bridge/src/topics.js"
import { CliError, usage } from "./errors.js"
import { describeDownlink, describeUplink } from "./format.js"
import { WireError, contract, explainMessage, renderWire } from "./wire.js"

const HEX_TEXT = /^(0x)?[0-9a-fA-F\s:,]*$/

function parseHex(text: string, what: string): Uint8Array {
  const clean = text.replace(/0x/gi, "").replace(/[\s:,]/g, "")
  if (!/^[0-9a-fA-F]*$/.test(clean)) throw usage(`${what} is neither an existing file nor hex bytes`)
  if (clean.length % 2) throw usage(`${what}: odd number of hex digits (${clean.length})`)
  return Uint8Array.from(Buffer.from(clean, "hex"))
}

/** A file (hex text as in proto/golden/*.hex, or raw bytes) or a hex string on the command line. */
export function readFrameInput(input: string): { bytes: Uint8Array; source: string } {
  if (existsSync(input)) {
    const raw = readFileSync(input)
    const text = raw.toString("latin1")
    if (raw.length && HEX_TEXT.test(text)) return { bytes: parseHex(text, input), source: `${input} (hex text)` }
    return { bytes: Uint8Array.from(raw), source: `${input} (binary)` }
  }
  // hex never holds '/' or a file extension: this was meant as a file
  if (/[/\\]|\.[A-Za-z]\w*$/.test(input)) throw usage(`no such file: ${input}`)
  return { bytes: parseHex(input, `'${input.length > 40 ? input.slice(0, 40) + "…" : input}'`), source: "hex argument" }
}

export interface DecodeOptions {
  downlink?: boolean
  kind?: string
}

export function decodeCommand(input: string, o: DecodeOptions): string {
  const { bytes, source } = readFrameInput(input)
  if (!bytes.length) throw usage(`${source}: no bytes to decode`)
  const name = o.downlink ? "Downlink" : "Uplink"
  const type = contract().lookupType(`citymeter.v1.${name}`)
  let table: string
  try {
    table = renderWire(explainMessage(type, bytes))
  } catch (e) {
    if (e instanceof WireError) throw new CliError(`not a valid protobuf ${name}: ${e.message}`)
    throw e
  }
  const out = [`citymeter.v1.${name}, ${bytes.length} bytes, from ${source}`, "", table, ""]
  if (o.downlink) {
    out.push(`meter's view: ${describeDownlink(bytes)}`)
    return out.join("\n")
  }
  let kind = o.kind as UpKind | undefined
  if (kind && !UP_KINDS.includes(kind)) throw usage(`--kind must be one of ${UP_KINDS.join(", ")}`)
  if (!kind) {
    const msg = type.decode(bytes) as protobuf.Message & { body?: string }
    kind = (msg.body as UpKind | undefined) ?? "death"
  }
  try {
    const frame = decodeUplink(kind, bytes)
    out.push(`bridge's view (valid on citymeter/v1/<meter>/up/${kind}):`, ...describeUplink(frame).map((l) => "  " + l))
  } catch (e) {
    if (e instanceof FrameError)
      throw new CliError(`${out.join("\n")}\nthe bridge would reject this frame on up/${kind}: ${e.code}: ${e.message}`)
    throw e
  }
  return out.join("\n")
}
