// Imports run one way: tests may use everything, but nothing outside tests/ imports from it
// (what benchmarks and scripts share with the tests lives in testkit/).
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs"
import { dirname, join, relative, resolve } from "node:path"
import ts from "typescript"
import { expect, test } from "vitest"
import { paths } from "../../sim/src/paths.js"

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

/** Every relative import of a file (static, `import type`, re-exports, dynamic), resolved to a path. */
function importsOf(file: string): string[] {
  const { importedFiles } = ts.preProcessFile(readFileSync(file, "utf8"), true, true)
  return importedFiles
    .map((i) => i.fileName)
    .filter((s) => s.startsWith("."))
    .map((s) => {
      const base = resolve(dirname(file), s.replace(/\.(m?js)$/, ""))
      return [`${base}.ts`, `${base}.mts`, join(base, "index.ts"), base].find(
        (p) => existsSync(p) && !statSync(p).isDirectory(),
      )
    })
    .filter((p): p is string => p !== undefined)
}

/**
 * The import circles among `files` (Tarjan's strongly connected components), each named by one
 * closed path through it and the other files it holds.
 */
function importCircles(files: string[]): string[] {
  const graph = new Map(files.map((f) => [f, importsOf(f).filter((t) => files.includes(t))]))
  const index = new Map<string, number>()
  const low = new Map<string, number>()
  const stack: string[] = []
  const onStack = new Set<string>()
  const components: string[][] = []
  const visit = (v: string) => {
    index.set(v, index.size)
    low.set(v, index.get(v)!)
    stack.push(v)
    onStack.add(v)
    for (const w of graph.get(v)!) {
      if (!index.has(w)) {
        visit(w)
        low.set(v, Math.min(low.get(v)!, low.get(w)!))
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!))
    }
    if (low.get(v) === index.get(v)) {
      const c: string[] = []
      let w: string
      do {
        w = stack.pop()!
        onStack.delete(w)
        c.push(w)
      } while (w !== v)
      if (c.length > 1 || graph.get(v)!.includes(v)) components.push(c)
    }
  }
  for (const f of files) if (!index.has(f)) visit(f)
  // Name each circle by one path through it: from its first file back to that file, breadth-first.
  return components.map((c) => {
    const start = [...c].sort()[0]!
    const prev = new Map<string, string>()
    const queue = [start]
    let last: string | undefined
    while (queue.length && !last) {
      const v = queue.shift()!
      for (const w of graph.get(v)!) {
        if (!c.includes(w)) continue
        if (w === start) {
          last = v
          break
        }
        if (!prev.has(w)) {
          prev.set(w, v)
          queue.push(w)
        }
      }
    }
    const path = [start]
    for (let v = last!; v !== start; v = prev.get(v)!) path.splice(1, 0, v)
    const named = [...path, start].map((f) => relative(paths.root, f)).join(" → ")
    const others = c.filter((f) => !path.includes(f)).map((f) => relative(paths.root, f))
    return others.length ? `${named} (the same circle also holds ${others.sort().join(", ")})` : named
  })
}

test("bridge, firmware and web have no import circles (type-only imports count)", () => {
  const files = ["bridge/src", "firmware", "web/src"].flatMap((d) => tsFiles(join(paths.root, d)))
  expect(files.length).toBeGreaterThan(50)
  expect(importCircles(files)).toEqual([])
})
