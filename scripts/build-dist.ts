// Compiles the bridge, the CLI and the demo to JavaScript in dist/ (gitignored), a mirror of the
// sources' layout: bridge/src/main.ts → dist/bridge/src/main.js, with a source map beside each file
// (`node --enable-source-maps` prints the .ts file and line in a stack trace). `npm run build:dist`;
// the last step of `npm run build`, after gen and build:web, whose outputs it copies.
//
// The compiled bridge reads a few files at run time by a path relative to its own module, so the
// build puts each where that path lands inside dist/, and dist/ with a node_modules beside it (or
// above it) is all a server needs (README "Run as a service"):
//   bridge/src/gen/citymeter.{js,d.ts}  the protobufjs static code `npm run gen` writes (tsc does
//                                       not copy .js); imported by the codec
//   web/dist/                           the dashboard (routes/dashboard.ts WEB_DIST)
//   boards/*.board.json                 settings bank sizes (tunables/storage-budget.ts)
//   package.json                        the version (version.ts) and "type": "module"
//   proto/tunables.json                 emitted by tsc itself (a JSON import)
// The worker threads' compiled entries (store/pglite-worker.js, sim/src/workers-thread.js) are
// compiled like any module; the .mjs entries that register tsx are for the sources only.
import { execFileSync } from "node:child_process"
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..")
export const DIST = join(root, "dist")

/** Files the compiled tree reads at run time, copied from the checkout (source → dist). */
const ASSETS = ["bridge/src/gen/citymeter.js", "bridge/src/gen/citymeter.d.ts", "web/dist"]

/**
 * Builds dist/ whole: into a folder beside it, then a rename, so that a process reading dist/
 * meanwhile (a test staging an install) finds the old tree or the new, never part of one.
 * `replace: false` keeps a dist/ that another process finished meanwhile (and drops this build).
 */
export function buildDist({ replace = true } = {}) {
  for (const a of ASSETS)
    if (!existsSync(join(root, a)))
      throw new Error(`${a} is missing: run \`npm run gen\` and \`npm run build:web\` first (or \`npm run build\`)`)
  const out = `${DIST}.${process.pid}.tmp`
  rmSync(out, { recursive: true, force: true })
  try {
    const tsc = join(root, "node_modules/.bin/tsc")
    execFileSync(tsc, ["-p", join(root, "tsconfig.build.json"), "--outDir", out], { stdio: "inherit" })
    for (const a of ASSETS) cpSync(join(root, a), join(out, a), { recursive: true })
    mkdirSync(join(out, "boards"), { recursive: true })
    for (const f of readdirSync(join(root, "boards")).filter((f) => f.endsWith(".board.json")))
      cpSync(join(root, "boards", f), join(out, "boards", f))
    const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as Record<string, unknown>
    const own = {
      name: pkg.name,
      version: pkg.version,
      private: true,
      description: `${String(pkg.description)} (compiled: npm run build)`,
      type: "module",
      engines: pkg.engines,
    }
    writeFileSync(join(out, "package.json"), JSON.stringify(own, null, 2) + "\n")
    for (const entry of ["bridge/src/main.js", "cli/main.js", "scripts/start.js"])
      if (!existsSync(join(out, entry))) throw new Error(`dist/${entry} was not written`)
    if (!replace && existsSync(DIST)) return
    rmSync(DIST, { recursive: true, force: true })
    renameSync(out, DIST)
  } finally {
    rmSync(out, { recursive: true, force: true })
  }
}

/** Builds dist/ when there is none (a checkout where only `npm run gen` ran); the dashboard too if need be. */
export async function ensureDist() {
  if (existsSync(join(DIST, "bridge/src/main.js"))) return
  if (!existsSync(join(root, "web/dist"))) await (await import("./build-web.js")).buildWeb()
  try {
    buildDist({ replace: false })
  } catch (e) {
    // another process built it meanwhile (its rename came first)
    if (!existsSync(join(DIST, "bridge/src/main.js"))) throw e
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const t0 = performance.now()
  buildDist()
  console.log(`dist: bridge, CLI and demo compiled in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
}
