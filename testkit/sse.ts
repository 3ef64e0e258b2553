// Server-sent events as a client parses them (WHATWG HTML §9.2.6: CR, LF and CRLF end a line; a
// blank line dispatches the event), for tests of the event-stream routes.
export interface SseEvent {
  event: string
  data: string
}

export function parseSse(text: string): SseEvent[] {
  const events: SseEvent[] = []
  let event = ""
  let data: string[] = []
  for (const line of text.split(/\r\n|\r|\n/)) {
    if (line === "") {
      if (data.length) events.push({ event: event || "message", data: data.join("\n") })
      event = ""
      data = []
      continue
    }
    const i = line.indexOf(":")
    const field = i < 0 ? line : line.slice(0, i)
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "")
    if (field === "event") event = value
    else if (field === "data") data.push(value)
  }
  return events
}
