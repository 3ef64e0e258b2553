// Node child processes as a user starts them: the `citymeter` CLI (cli/bin/citymeter.js) or any
// script, from the repository root, with what they print collected.
import { spawn } from "node:child_process"
import { join } from "node:path"
import { paths } from "../sim/src/paths.js"

export const CITYMETER_BIN = join(paths.root, "cli/bin/citymeter.js")

export interface Run {
  code: number | null
  stdout: string
  stderr: string
}

/**
 * Starts `node <argv>` in the repository root; env is laid over this process's environment (an
 * undefined value unsets a variable). `out` fills as the process prints; `done` resolves on exit.
 */
export function startNode(argv: string[], env: Record<string, string | undefined> = {}) {
  const proc = spawn(process.execPath, argv, {
    cwd: paths.root,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  })
  const out: Run = { code: null, stdout: "", stderr: "" }
  proc.stdout.on("data", (b) => (out.stdout += b))
  proc.stderr.on("data", (b) => (out.stderr += b))
  const done = new Promise<Run>((res) => proc.on("close", (code) => res({ ...out, code })))
  return { proc, out, done }
}

/** Runs `citymeter <args>` to its end. */
export const runCitymeter = (args: string[], env: Record<string, string | undefined> = {}) =>
  startNode([CITYMETER_BIN, ...args], env).done
