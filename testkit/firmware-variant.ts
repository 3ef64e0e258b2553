// A different firmware for a board, for deploys over the air (issue 23): the board's target
// (firmware/targets/<board>.ts) built as `citymeter build` builds it (cli/build.ts stage, devs
// build), from a copy of firmware/ whose gen/version.ts says another VERSION, so the Birth of the
// new program reports `citymeter-fw <version>`. panicAtStart: a broken release, whose entry throws
// before anything else runs (the runtime restarts a panicking program every 5 s: devsmgr.c
// devsmgr_process). Builds are cached under .devicescript/variants/<key>/, keyed by the sources
// and the options, so test files share one; a build goes to a temporary folder that is renamed
// into place, so concurrent builders of one key do not corrupt each other (the first rename wins).
import { createHash } from "node:crypto"
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs"
import { join, relative } from "node:path"
import { devsBin, entryFor, run, stage } from "../cli/build.js"
import { paths } from "../sim/src/paths.js"

export interface VariantOptions {
  board: string
  /** What firmware/gen/version.ts's VERSION says. */
  version: string
  /** The entry throws at start-up, before the program or any driver runs. */
  panicAtStart?: boolean
}

export interface Variant {
  /** The .devs file (in the cache). */
  file: string
  bytes: Buffer
  sha256: string
  size: number
  version: string
  /** ms this call took to build it; 0 when it came from the cache. */
  buildMs: number
}

/** What the compiler reads besides node_modules: the firmware, service specs, boards, config. */
const SOURCES = ["firmware", "services", "boards", "devsconfig.json", "package.json"]
const VERSION_TS = "firmware/gen/version.ts"
const PANIC_MODULE = "firmware/targets/panic-at-start.ts"

function filesUnder(p: string): string[] {
  if (!existsSync(p)) return []
  if (!statSync(p).isDirectory()) return [p]
  return readdirSync(p)
    .sort()
    .flatMap((f) => filesUnder(join(p, f)))
}

/** The cache key: every source file's path and bytes, the compiler's version, the options. */
export function variantKey(o: VariantOptions): string {
  const h = createHash("sha256")
  const cli = JSON.parse(readFileSync(join(paths.root, "node_modules/@devicescript/cli/package.json"), "utf8"))
  h.update(JSON.stringify({ ...o, panicAtStart: !!o.panicAtStart, cli: cli.version }))
  for (const f of SOURCES.flatMap((s) => filesUnder(join(paths.root, s)))) {
    h.update(relative(paths.root, f) + "\0")
    h.update(readFileSync(f))
  }
  return h.digest("hex").slice(0, 16)
}

const variantOf = (dir: string, version: string, buildMs: number): Variant => {
  const file = join(dir, "bytecode.devs")
  const bytes = readFileSync(file)
  const sha256 = createHash("sha256").update(bytes).digest("hex")
  return { file, bytes, sha256, size: bytes.length, version, buildMs }
}

/** Builds (or takes from the cache) the board's firmware as version `version`. */
export async function buildVariant(o: VariantOptions): Promise<Variant> {
  if (!/^[0-9A-Za-z.+-]{1,32}$/.test(o.version)) throw new Error(`version ${JSON.stringify(o.version)}: [0-9A-Za-z.+-]`)
  const cacheRoot = join(paths.root, ".devicescript/variants")
  const dir = join(cacheRoot, variantKey(o))
  if (existsSync(join(dir, "bytecode.devs"))) return variantOf(dir, o.version, 0)
  if (!existsSync(join(paths.root, VERSION_TS))) throw new Error(`${VERSION_TS} is missing: run \`npm run gen\``)
  const t0 = performance.now()
  const entry = entryFor(o.board)
  const staged = stage(paths.root)
  try {
    // firmware/ as a copy, not the link stage() made: this build's version and entry only
    rmSync(join(staged, "firmware"))
    cpSync(join(paths.root, "firmware"), join(staged, "firmware"), { recursive: true })
    const versionTs = join(staged, VERSION_TS)
    const before = readFileSync(versionTs, "utf8")
    const after = before.replace(/VERSION = "[^"]*"/, `VERSION = "${o.version}"`)
    if (after === before && !before.includes(`VERSION = "${o.version}"`)) throw new Error(`no VERSION in ${VERSION_TS}`)
    writeFileSync(versionTs, after)
    if (o.panicAtStart) {
      // modules run in import order: the first import of the entry throws before the others run
      writeFileSync(
        join(staged, PANIC_MODULE),
        `// a broken release (testkit/firmware-variant.ts panicAtStart)\n` +
          `throw new Error("citymeter: panic at start (a broken release)")\n`,
      )
      const entryTs = join(staged, entry)
      writeFileSync(entryTs, `import "./panic-at-start"\n` + readFileSync(entryTs, "utf8"))
    }
    const out: string[] = []
    const devs = await run(process.execPath, [devsBin(), "build", entry], staged, (l) => out.push(l), "")
    const built = join(staged, ".devicescript/bin/bytecode.devs")
    if (devs.code || !existsSync(built))
      throw new Error(`devs build of ${o.board} ${o.version} failed (exit ${devs.code}):\n${out.join("\n")}`)
    mkdirSync(cacheRoot, { recursive: true })
    const tmp = mkdtempSync(join(cacheRoot, ".tmp-"))
    for (const f of ["bytecode.devs", "bytecode-dbg.json"])
      if (existsSync(join(staged, ".devicescript/bin", f))) cpSync(join(staged, ".devicescript/bin", f), join(tmp, f))
    writeFileSync(join(tmp, "variant.json"), JSON.stringify({ ...o, entry }, null, 2) + "\n")
    try {
      renameSync(tmp, dir)
    } catch (e) {
      // another builder of the same key renamed its folder first: keep theirs
      rmSync(tmp, { recursive: true, force: true })
      if (!existsSync(join(dir, "bytecode.devs"))) throw e
    }
    return variantOf(dir, o.version, Math.round(performance.now() - t0))
  } finally {
    rmSync(staged, { recursive: true, force: true })
  }
}
