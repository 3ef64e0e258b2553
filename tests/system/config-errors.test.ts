// Issue 26 item 2, in part: a bridge given settings that cannot work names every bad variable, one
// line each with the form it takes, exits 2 and opens nothing: not its HTTP port, not its broker's.
// As an operator meets it: `npm run bridge` (bridge/src/main.ts) and `citymeter bridge`.
import { createServer } from "node:net"
import { expect, test } from "vitest"
import { CITYMETER_BIN, startNode } from "../../testkit/process.js"
import { freePort } from "../../testkit/infra.js"

const listenable = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = createServer()
    s.once("error", () => resolve(false))
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)))
  })

test("every bad variable on its own line with its form; exit 2; nothing opened", async () => {
  const [http, mqtt] = [await freePort(), await freePort()]
  const env = {
    CITYMETER_MODE: "demo",
    DATABASE_URL: "pglite:memory",
    HTTP_PORT: String(http),
    EMBEDDED_MQTT_PORT: String(mqtt),
    WSSK_PORT: "99999",
    READ_CONCURRENCY: "0",
    INGEST_STALL_S: "soon",
    PUBLIC_URL: "ftp://city",
    HTTP_HEADERS_TIMEOUT_MS: "x",
    READINGS_HOT_DAYS: "soon",
  }
  for (const [prefix, argv] of [
    ["citymeter bridge", ["bridge/src/main.ts"]],
    ["citymeter", [CITYMETER_BIN, "bridge"]],
  ] as const) {
    const r = await startNode(["--import", "tsx", ...argv], env).done
    expect(r.code, r.stderr).toBe(2)
    const lines = r.stderr.trim().split("\n")
    expect(lines.length, r.stderr).toBe(6)
    for (const [name, form] of [
      ["WSSK_PORT", "must be a TCP port, 0..65535 (got '99999')"],
      ["READ_CONCURRENCY", "must be a positive whole number (got '0')"],
      ["INGEST_STALL_S", "must be a number ≥ 0 (got 'soon')"],
      ["PUBLIC_URL", "must be an absolute http(s) URL"],
      ["HTTP_HEADERS_TIMEOUT_MS", "must be a positive integer (got 'x')"],
      ["READINGS_HOT_DAYS", "must be a positive number of days or off (got 'soon')"],
    ])
      expect(
        lines.some((l) => l.startsWith(`${prefix}: error: ${name} ${form}`)),
        `${name} in:\n${r.stderr}`,
      ).toBe(true)
    expect(r.stdout).not.toMatch(/listening|API http/)
    expect(await listenable(http)).toBe(true)
    expect(await listenable(mqtt)).toBe(true)
  }
}, 120_000)
