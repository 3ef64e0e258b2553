// Board ids: DeviceScript's built-in boards (@dsboard/<id> in @devicescript/core) plus this
// repository's boards/<id>.board.json, plus "sim" for the simulator.
import { existsSync, readFileSync, readdirSync } from "node:fs"
import { createRequire } from "node:module"
import { join } from "node:path"
import { paths } from "../sim/src/paths.js"

const require = createRequire(import.meta.url)

export function builtinBoards(): string[] {
  const dts = require.resolve("@devicescript/core/src/devicescript-boards.d.ts")
  return [...readFileSync(dts, "utf8").matchAll(/declare module "@dsboard\/([A-Za-z0-9_]+)"/g)].map((m) => m[1])
}

export function customBoards(): string[] {
  const dir = join(paths.root, "boards")
  if (!existsSync(dir)) return []
  return readdirSync(dir)
    .filter((f) => f.endsWith(".board.json"))
    .map((f) => f.slice(0, -".board.json".length))
}

export function knownBoards(): Set<string> {
  return new Set(["sim", ...builtinBoards(), ...customBoards()])
}

/** A custom board's JSON, or undefined for a built-in one. */
export function customBoard(id: string): Record<string, unknown> | undefined {
  const f = join(paths.root, "boards", `${id}.board.json`)
  return existsSync(f) ? (JSON.parse(readFileSync(f, "utf8")) as Record<string, unknown>) : undefined
}
