// The device log route's pure parts (bridge/src/device-log.ts): a device's line cannot add SSE
// fields or events, is cut at 512 characters, and streams are counted per process and per meter.
import { describe, expect, test } from "vitest"
import {
  CONTROL_REPLACEMENT,
  LINE_CUT_MARK,
  LINE_MAX_CHARS,
  StreamSlots,
  lineEvent,
  sanitizeLine,
  sseEvent,
} from "../../bridge/src/device-log.js"
import { parseSse } from "../../testkit/sse.js"

describe("device log lines", () => {
  test("control characters but tab are replaced: no line break of any kind is left", () => {
    const hostile = "ok\n\ndata: x\r\revent: end\r\n\u0000\u001b[31m\u007f\u0085\u2028\u2029\tend"
    const s = sanitizeLine(hostile)
    // eslint-disable-next-line no-control-regex
    expect(s).not.toMatch(/[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u2028\u2029]/)
    expect(s).toContain("\t")
    expect(s.startsWith(`ok${CONTROL_REPLACEMENT}${CONTROL_REPLACEMENT}data: x`)).toBe(true)
    expect(sanitizeLine("plain line: 0x2 (ü, ✓)")).toBe("plain line: 0x2 (ü, ✓)")
  })

  test("a line injecting \\n\\ndata: x (and CR, CRLF) cannot forge a field or an event", () => {
    for (const inject of ["\n\ndata: x", "\r\rdata: x", "\r\n\r\nevent: end\ndata: x", "\n\nevent: end\n\n"]) {
      const text = lineEvent(`a${inject}`, new Date(0)) + sseEvent("end", { reason: "time" })
      const events = parseSse(text)
      expect(events.map((e) => e.event)).toEqual(["line", "end"])
      const line = JSON.parse(events[0].data) as { at: string; line: string }
      expect(line.at).toBe("1970-01-01T00:00:00.000Z")
      expect(line.line.startsWith("a")).toBe(true)
      expect(line.line).not.toMatch(/[\r\n]/)
    }
  })

  test("a long line is cut at 512 characters with a mark; a cut never splits a surrogate pair", () => {
    const long = sanitizeLine("x".repeat(5000))
    expect(long.length).toBe(LINE_MAX_CHARS)
    expect(long.endsWith(LINE_CUT_MARK)).toBe(true)
    expect(sanitizeLine("y".repeat(LINE_MAX_CHARS))).toBe("y".repeat(LINE_MAX_CHARS))
    const emoji = sanitizeLine("z".repeat(LINE_MAX_CHARS - 2) + "😀".repeat(10))
    expect(emoji.length).toBeLessThanOrEqual(LINE_MAX_CHARS)
    expect(emoji).not.toMatch(/[\ud800-\udbff](?![\udc00-\udfff])/)
    // a lone surrogate (a broken multi-byte sequence) is replaced
    expect(sanitizeLine("a\ud800b")).toBe(`a${CONTROL_REPLACEMENT}b`)
  })

  test("an event name is ours: one word, never text", () => {
    expect(() => sseEvent("line\ndata: x", {})).toThrow()
    expect(sseEvent("end", { reason: "lines" })).toBe('event: end\ndata: {"reason":"lines"}\n\n')
  })
})

describe("device log stream slots", () => {
  test("one stream per meter, at most max in all; a slot is given back once", () => {
    const slots = new StreamSlots(2)
    const a = slots.take("m-a")
    expect("release" in a).toBe(true)
    expect(slots.take("m-a")).toEqual({ refused: "meter" })
    const b = slots.take("m-b")
    expect(slots.take("m-c")).toEqual({ refused: "process" })
    expect(slots.size).toBe(2)
    if (!("release" in a) || !("release" in b)) throw new Error("slots")
    a.release()
    a.release()
    expect(slots.size).toBe(1)
    expect("release" in slots.take("m-c")).toBe(true)
    expect(slots.take("m-a")).toEqual({ refused: "process" })
    b.release()
    expect("release" in slots.take("m-a")).toBe(true)
  })
})
