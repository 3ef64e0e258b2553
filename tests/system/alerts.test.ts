// The alert rules (deploy/prometheus/alerts.yml, issue 26 item 4) through Prometheus's own checker:
// `promtool check rules` and the unit tests of deploy/prometheus/alerts.test.yml. promtool comes with
// Debian's prometheus package (.ci/run installs it); without it this test fails, never skips.
import { spawnSync } from "node:child_process"
import { join } from "node:path"
import { expect, test } from "vitest"

const dir = join(import.meta.dirname, "../../deploy/prometheus")

function promtool(...args: string[]) {
  const r = spawnSync("promtool", args, { cwd: dir, encoding: "utf8", timeout: 60_000 })
  if (r.error && (r.error as NodeJS.ErrnoException).code === "ENOENT")
    throw new Error("promtool is missing: install Debian's prometheus package (apt-get install prometheus)")
  if (r.error) throw r.error
  return { code: r.status, out: `${r.stdout}${r.stderr}` }
}

test("promtool check rules: alerts.yml is valid", () => {
  const r = promtool("check", "rules", "alerts.yml")
  expect(r.out).toMatch(/SUCCESS: \d+ rules found/)
  expect(r.code, r.out).toBe(0)
})

test("promtool test rules: every alert fires on its series and not on the others", () => {
  const r = promtool("test", "rules", "alerts.test.yml")
  expect(r.code, r.out).toBe(0)
  expect(r.out).toMatch(/SUCCESS/)
  expect(r.out).not.toMatch(/FAILED/)
})
