// Imports run one way: tests may use everything, but nothing outside tests/ imports from it
// (what benchmarks and scripts share with the tests lives in testkit/).
import { readFileSync, readdirSync } from "node:fs"
import { join, relative } from "node:path"
import { expect, test } from "vitest"
import { paths } from "../sim/src/paths.js"

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    if (e.name === "node_modules" || e.name === "gen" || e.name === "dist") return []
    const p = join(dir, e.name)
    return e.isDirectory() ? tsFiles(p) : /\.(ts|mts|js|mjs)$/.test(e.name) ? [p] : []
  })
}

test("no file outside tests/ imports from tests/", () => {
  const importsTests = /from\s+["'](?:\.\.\/)+tests\/|import\(\s*["'](?:\.\.\/)+tests\//
  const dirs = ["bridge", "bench", "cli", "scripts", "sim", "testkit", "web/src"]
  const files = dirs.flatMap((d) => tsFiles(join(paths.root, d)))
  expect(files.length).toBeGreaterThan(50)
  const offenders = files.filter((f) => importsTests.test(readFileSync(f, "utf8"))).map((f) => relative(paths.root, f))
  expect(offenders).toEqual([])
})
