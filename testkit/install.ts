// A server's install of the compiled bridge, made from this checkout for tests: what README "Run as
// a service" puts in /opt/citymeter. The compiled tree (dist/, `npm run build`) and the production
// dependencies only, in a folder of its own: no tsx, no TypeScript, no sources on the resolution
// path, and nothing inside the checkout, which may be a mode-0700 folder another user cannot enter.
import { spawn, type ChildProcess } from "node:child_process"
import { chmodSync, cpSync, existsSync, lstatSync, mkdtempSync, readFileSync, readdirSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join, relative } from "node:path"
import { paths } from "../sim/src/paths.js"
import { waitFor } from "./wait.js"

interface Manifest {
  dependencies?: Record<string, string>
  optionalDependencies?: Record<string, string>
  peerDependencies?: Record<string, string>
}

const manifest = (dir: string) => JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as Manifest

/** Where Node finds package `name` required from package folder `from`: the nearest node_modules up to the root. */
function locate(name: string, from: string): string | undefined {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, "node_modules", name)
    if (existsSync(join(candidate, "package.json"))) return candidate
    if (dir === paths.root || dir === dirname(dir)) return undefined
  }
}

/**
 * The folders of the root package's production dependencies and theirs, as they sit under
 * node_modules (a package nested in another's node_modules stays nested). A missing optional or
 * peer dependency is skipped; a missing dependency is an error.
 */
export function productionPackages(root = paths.root): string[] {
  const found = new Set<string>()
  const visit = (dir: string) => {
    const m = manifest(dir)
    const wanted = [
      ...Object.keys(m.dependencies ?? {}).map((n) => [n, true] as const),
      ...Object.keys({ ...m.optionalDependencies, ...m.peerDependencies }).map((n) => [n, false] as const),
    ]
    for (const [name, required] of wanted) {
      const at = locate(name, dir)
      if (!at) {
        if (required)
          throw new Error(`${name}, a dependency of ${relative(root, dir) || "citymeter"}, is not installed`)
        continue
      }
      if (found.has(at)) continue
      found.add(at)
      visit(at)
    }
  }
  visit(root)
  return [...found].map((d) => relative(root, d)).sort()
}

/**
 * A new folder holding dist/ and node_modules/ with the production dependencies, readable by every
 * user and writable by none but root (the owner): code another user runs and cannot change.
 */
export function stageInstall(root = paths.root): string {
  const dist = join(root, "dist")
  if (!existsSync(join(dist, "bridge/src/main.js"))) throw new Error(`${dist} is not built: run \`npm run build\``)
  const dir = mkdtempSync(join(tmpdir(), "cm-install-"))
  cpSync(dist, join(dir, "dist"), { recursive: true })
  // package.json and the CLI's bin, as README "Run as a service" copies them
  for (const f of ["package.json", "cli/bin/citymeter.js"]) cpSync(join(root, f), join(dir, f))
  for (const pkg of productionPackages(root)) {
    const from = join(root, pkg)
    // each nested package is its own entry: copy a package without its node_modules
    cpSync(from, join(dir, pkg), { recursive: true, filter: (src) => src !== join(from, "node_modules") })
  }
  readOnly(dir)
  return dir
}

/**
 * Removes a staged install in the background: unlinking its ~8,000 files took 30 s on this
 * machine's loaded disk (copying them, 2 s), which a test's afterAll need not wait for.
 */
export function removeInstall(dir: string) {
  spawn("rm", ["-rf", dir], { detached: true, stdio: "ignore" }).unref()
}

/** Every folder r-x and every file r-- for all (executables r-x): nobody but root may write. */
function readOnly(path: string) {
  const st = lstatSync(path)
  if (st.isDirectory()) {
    for (const e of readdirSync(path)) readOnly(join(path, e))
    chmodSync(path, 0o555)
  } else if (st.isFile()) chmodSync(path, st.mode & 0o111 ? 0o555 : 0o444)
}

/** The user the tests run an installed bridge as: nobody when they run as root, else themselves. */
export const SERVICE_UID = process.getuid?.() === 0 ? 65534 : (process.getuid?.() ?? 0)

/** A command line run as SERVICE_UID: through setpriv when the tests run as root, else as it is. */
export const asServiceUser = (argv: string[]) =>
  process.getuid?.() === 0
    ? ["setpriv", `--reuid=${SERVICE_UID}`, `--regid=${SERVICE_UID}`, "--clear-groups", ...argv]
    : argv

export interface Installed {
  proc: ChildProcess
  /** stdout and stderr, as printed. */
  output: string[]
  /** The API's URL, once the start line printed it. */
  apiUrl?: string
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

/**
 * Starts `node <argv>` with only `env` (and PATH) in its environment, as a supervisor would, as
 * SERVICE_UID (setpriv, when the tests run as root); resolves once it prints its API line (a
 * first start of the embedded engine takes a few CPU seconds: on a loaded machine, a minute).
 */
export async function startInstalled(
  argv: string[],
  env: Record<string, string>,
  cwd: string,
  timeoutMs = 90_000,
): Promise<Installed> {
  const [cmd, ...args] = asServiceUser([process.execPath, ...argv])
  const proc = spawn(cmd, args, { cwd, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env } })
  const it: Installed = {
    proc,
    output: [],
    exited: new Promise((r) => proc.once("exit", (code, signal) => r({ code, signal }))),
  }
  const onData = (b: Buffer) => {
    it.output.push(String(b))
    it.apiUrl ??= /API (http:\/\/\S+)/.exec(String(b))?.[1]
  }
  proc.stdout!.on("data", onData)
  proc.stderr!.on("data", onData)
  await waitFor(
    "the bridge's API line",
    async () => {
      if (proc.exitCode !== null) throw new Error(`exited ${proc.exitCode}:\n${it.output.join("")}`)
      return it.apiUrl !== undefined
    },
    timeoutMs,
    50,
  ).catch((e: Error) => {
    proc.kill("SIGKILL")
    throw new Error(`${e.message}; it printed:\n${it.output.join("")}`, { cause: e })
  })
  return it
}
