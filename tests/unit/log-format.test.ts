// Issue 26 item 5: logs readable at a terminal, JSON lines otherwise, LOG_LEVEL respected, and a
// bad LOG_LEVEL or LOG_FORMAT named with the forms it takes (bridge/src/log.ts).
import { PassThrough } from "node:stream"
import { describe, expect, test } from "vitest"
import { configFromEnv, ServiceConfigError } from "../../bridge/src/config.js"
import { createLogger, logFormatFor, prettyLine, readLogSettings } from "../../bridge/src/log.js"

/** A stream that keeps what is written to it, a terminal or not. */
function capture(isTTY: boolean) {
  const s = Object.assign(new PassThrough(), { isTTY, text: "" })
  s.on("data", (b: Buffer) => (s.text += b.toString()))
  return s
}

describe("the log's form", () => {
  test("readable on a terminal, JSON lines on anything else", () => {
    expect(logFormatFor({ isTTY: true })).toBe("pretty")
    expect(logFormatFor({ isTTY: false })).toBe("json")
    expect(logFormatFor({})).toBe("json")
  })

  test("a logger on a pipe writes one JSON object a line", async () => {
    const out = capture(false)
    const log = createLogger("citymeter-bridge", { level: "info" }, out)
    log.child({ meterId: "demo-001" }).info({ boot: 7 }, "meter birth")
    await new Promise((r) => setImmediate(r))
    const rec = JSON.parse(out.text.trim()) as Record<string, unknown>
    expect(rec).toMatchObject({ level: 30, name: "citymeter-bridge", meterId: "demo-001", boot: 7, msg: "meter birth" })
  })

  test("a logger on a terminal writes readable lines: time, level, name, [meter], message, fields", async () => {
    const out = capture(true)
    const log = createLogger("firmware", { level: "info" }, out)
    log.child({ meterId: "demo-002" }).warn({ skewMs: -227912, url: "mqtt://127.0.0.1:1883" }, "clock skewed")
    await new Promise((r) => setImmediate(r))
    const plain = out.text.replace(new RegExp(String.fromCharCode(27) + "\\[[0-9;]*m", "g"), "")
    expect(plain).toMatch(
      /^\d\d:\d\d:\d\d\.\d{3} WARN {2}firmware \[demo-002\] clock skewed skewMs=-227912 url=mqtt:\/\/127\.0\.0\.1:1883\n$/,
    )
    expect(() => JSON.parse(out.text) as unknown).toThrow()
  })

  test("LOG_FORMAT forces a form whatever the output", async () => {
    const tty = capture(true)
    createLogger("b", { level: "info", format: "json" }, tty).info("x")
    const pipe = capture(false)
    createLogger("b", { level: "info", format: "pretty" }, pipe).info("x")
    await new Promise((r) => setImmediate(r))
    expect(JSON.parse(tty.text)).toMatchObject({ msg: "x" })
    expect(pipe.text).toMatch(/ INFO {2}b x\n$/)
    expect(pipe.text).not.toContain("\x1b[") // no colours off a terminal
  })

  test("fields that are not words are quoted; an error's stack follows its line", () => {
    const line = prettyLine(
      JSON.stringify({
        level: 50,
        time: 0,
        name: "b",
        msg: "closing failed",
        what: "the store",
        n: { a: 1 },
        err: { type: "Error", message: "boom", stack: "Error: boom\n    at x (y.ts:1:1)" },
      }),
    )
    expect(line).toMatch(
      / ERROR b closing failed what="the store" n=\{"a":1\}\n {4}Error: boom\n {8}at x \(y\.ts:1:1\)$/,
    )
    expect(prettyLine("not json")).toBe("not json")
  })
})

describe("LOG_LEVEL", () => {
  test("a level suppresses the records below it", async () => {
    const out = capture(false)
    const log = createLogger("b", readLogSettings({ LOG_LEVEL: "warn" }).settings, out)
    log.info("hidden")
    log.debug("hidden too")
    log.warn("shown")
    log.error("shown too")
    await new Promise((r) => setImmediate(r))
    expect(
      out.text
        .trim()
        .split("\n")
        .map((l) => (JSON.parse(l) as { msg: string }).msg),
    ).toEqual(["shown", "shown too"])
  })

  test("unset or empty is info; each of pino's levels is taken, in any case", () => {
    expect(readLogSettings({}).settings).toEqual({ level: "info" })
    expect(readLogSettings({ LOG_LEVEL: "" }).settings).toEqual({ level: "info" })
    for (const level of ["fatal", "error", "warn", "info", "debug", "trace", "silent"]) {
      expect(readLogSettings({ LOG_LEVEL: level })).toEqual({ settings: { level }, problems: [] })
      expect(readLogSettings({ LOG_LEVEL: level.toUpperCase() })).toEqual({ settings: { level }, problems: [] })
    }
  })

  test("a level that is not one is a settings error naming the accepted forms, with the other bad ones", () => {
    let error: unknown
    try {
      configFromEnv({ CITYMETER_MODE: "demo", LOG_LEVEL: "loud", LOG_FORMAT: "xml", HTTP_PORT: "x" })
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(ServiceConfigError)
    expect((error as ServiceConfigError).problems).toEqual([
      "LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent (got 'loud')",
      "LOG_FORMAT must be json or pretty, or unset to choose by the terminal (got 'xml')",
      "HTTP_PORT must be a TCP port, 0..65535 (got 'x')",
    ])
    expect(configFromEnv({ CITYMETER_MODE: "demo", LOG_LEVEL: "debug" }).logSettings).toEqual({ level: "debug" })
  })
})
