// The device log route's pure parts (routes/device-log.ts, issue 23 item 6): what a device log line
// may carry into a server-sent event stream, the events themselves, and the count of streams open
// in the process and per meter. A meter's log is the device's text: a hostile or broken device must
// not add SSE fields (a line break would) or send unbounded lines.

/** Characters a line keeps; the rest is cut (with LINE_CUT_MARK at its end). */
export const LINE_MAX_CHARS = 512
/** Replaces each control character of a line (every C0 but tab, DEL, C1, U+2028/9). */
export const CONTROL_REPLACEMENT = "\uFFFD"
export const LINE_CUT_MARK = "…"

// C0 but tab, DEL, C1, and the line and paragraph separators
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u2028\u2029]/g
/** A surrogate without its pair (invalid UTF-16, from a cut or broken multi-byte sequence). */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g

/**
 * A device log line as the stream carries it: control characters other than tab replaced (CR and
 * LF included, so no line can end an SSE field or event), at most LINE_MAX_CHARS characters (a cut
 * line ends with LINE_CUT_MARK), never a lone surrogate.
 */
export function sanitizeLine(line: string, maxChars = LINE_MAX_CHARS): string {
  let s = line.replace(CONTROL, CONTROL_REPLACEMENT).replace(LONE_SURROGATE, CONTROL_REPLACEMENT)
  if (s.length > maxChars) {
    s = s.slice(0, maxChars - LINE_CUT_MARK.length)
    if (/[\ud800-\udbff]$/.test(s)) s = s.slice(0, -1) // the cut split a pair
    s += LINE_CUT_MARK
  }
  return s
}

/**
 * One server-sent event: `event: <name>` and one `data:` line of JSON. JSON.stringify escapes
 * every control character, so the data is one line whatever the object holds; the name is ours.
 */
export function sseEvent(name: string, data: unknown): string {
  if (!/^[a-z_]+$/.test(name)) throw new Error(`not an event name: ${JSON.stringify(name)}`)
  const json = JSON.stringify(data)
  if (/[\r\n]/.test(json)) throw new Error("an event's data must be one line") // cannot happen: JSON escapes them
  return `event: ${name}\ndata: ${json}\n\n`
}

/** Why a device log stream ended: the `reason` of its `event: end`. */
export type DeviceLogEnd =
  | "time" // `seconds` are up
  | "lines" // `maxLines` lines sent
  | "bytes" // the stream's byte cap (BRIDGE_DEFAULTS.deviceLog.maxBytes)
  | "link_closed" // the meter's WSSK link closed (its window ended, a reconnect, a newer link)
  | "client_gone" // the client closed the connection
  | "shutdown" // the bridge is stopping

/** One `event: line` of a device log line: its time of arrival and its sanitised text. */
export const lineEvent = (line: string, at = new Date()) =>
  sseEvent("line", { at: at.toISOString(), line: sanitizeLine(line) })

/** Device log streams at once: at most `max` in the process and one per meter. */
export class StreamSlots {
  private readonly meters = new Set<string>()
  constructor(readonly max: number) {}

  get size() {
    return this.meters.size
  }

  /**
   * Takes the meter's slot: the function that gives it back (once, however often called), or why
   * not: "meter" (the meter streams to another client), "process" (`max` streams are open).
   */
  take(meterId: string): { release: () => void } | { refused: "meter" | "process" } {
    if (this.meters.has(meterId)) return { refused: "meter" }
    if (this.meters.size >= this.max) return { refused: "process" }
    this.meters.add(meterId)
    let released = false
    return {
      release: () => {
        if (released) return
        released = true
        this.meters.delete(meterId)
      },
    }
  }
}
