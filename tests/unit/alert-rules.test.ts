// deploy/prometheus/alerts.yml against the bridge (issue 26 item 4): every metric a rule reads is one
// createMetrics() registers, so renaming a metric breaks this test, not the operator's alerts; and
// every alert has its severity, summary, description and a runbook section that README.md has.
// (promtool runs the rules themselves: tests/system/alerts.test.ts.)
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { expect, test } from "vitest"
import { createMetrics } from "../../bridge/src/metrics.js"

const root = join(import.meta.dirname, "../..")
const rules = readFileSync(join(root, "deploy/prometheus/alerts.yml"), "utf8")

/** The text of every `expr:` (one line, or a `|` block), comments and label matchers left out. */
function expressions(yaml: string): string[] {
  const lines = yaml.split("\n")
  const out: string[] = []
  lines.forEach((line, i) => {
    const m = /^(\s*)expr:\s*(.*)$/.exec(line)
    if (!m) return
    if (!m[2].startsWith("|")) return void out.push(m[2])
    const block: string[] = []
    for (let j = i + 1; j < lines.length && (lines[j].trim() === "" || lines[j].search(/\S/) > m[1].length); j++)
      block.push(lines[j])
    out.push(block.join("\n"))
  })
  return out.map((e) => e.replace(/\{[^}]*\}/g, ""))
}

/** Each alert's block: its name, labels and annotations as written. */
function alerts(yaml: string) {
  return yaml
    .split(/^\s*- alert: /m)
    .slice(1)
    .map((block) => ({
      name: block.split("\n")[0].trim(),
      severity: /^\s+severity: (\S+)/m.exec(block)?.[1],
      summary: /^\s+summary: (.+)/m.exec(block)?.[1],
      description: /^\s+description: (.+)/m.exec(block)?.[1],
      runbook: /^\s+runbook: "README\.md#([a-z0-9-]+)"/m.exec(block)?.[1],
    }))
}

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens. */
const slug = (heading: string) =>
  heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, "")
    .replace(/ /g, "-")

/** The names createMetrics(true) registers (with prom-client's process metrics), as series names. */
async function exportedNames() {
  return new Set(
    (await createMetrics(true).registry.getMetricsAsJSON()).flatMap((m) =>
      String(m.type) === "histogram" ? [`${m.name}_bucket`, `${m.name}_sum`, `${m.name}_count`] : [m.name],
    ),
  )
}

const usedNames = (yaml: string) =>
  new Set(expressions(yaml).flatMap((e) => e.match(/\b(citymeter|process)_[a-z_]+/g) ?? []))

test("every metric the rules read is one the bridge exports", async () => {
  const exported = await exportedNames()
  expect(expressions(rules).length).toBe(alerts(rules).length)
  const used = usedNames(rules)
  expect([...used].filter((name) => name.startsWith("citymeter_")).length).toBeGreaterThanOrEqual(10)
  expect(used).toContain("process_start_time_seconds")
  expect([...used].filter((name) => !exported.has(name))).toEqual([])
})

test("a renamed metric is caught", async () => {
  const exported = await exportedNames()
  const renamed = rules.replace("(citymeter_ingest_stalled)", "(citymeter_ingest_stuck)")
  expect([...usedNames(renamed)].filter((name) => !exported.has(name))).toEqual(["citymeter_ingest_stuck"])
})

test("every alert has a severity, a summary, a description and a runbook section in README.md", () => {
  const readme = readFileSync(join(root, "README.md"), "utf8")
  const anchors = new Set([...readme.matchAll(/^#{1,6} (.+)$/gm)].map((m) => slug(m[1])))
  const list = alerts(rules)
  expect(list.length).toBeGreaterThanOrEqual(12)
  for (const a of list) {
    expect(a.severity, a.name).toMatch(/^(critical|warning)$/)
    expect(a.summary, a.name).toBeTruthy()
    expect(a.description, a.name).toBeTruthy()
    expect(a.runbook, a.name).toBeTruthy()
    expect(anchors.has(a.runbook!), `${a.name}: README.md#${a.runbook}`).toBe(true)
  }
  expect(new Set(list.map((a) => a.name)).size).toBe(list.length)
})
