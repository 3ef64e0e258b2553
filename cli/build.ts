// `citymeter build`: the DeviceScript CLI (devs) with citymeter's layout, sources → bytecode.
// The build runs in a staging directory that links the repository (not .git: the compiler then
// stamps no git hash or build time, so the same sources and settings give the same bytes) and
// holds the chosen settings files, because `devs build` reads ./.env.defaults and ./.env.local
// from where it runs: a provisioned meter's settings never overwrite the repository's, and
// concurrent builds do not share .devicescript/bin. Flashing and deploying a build: cli/flash.ts.
//
// One bytecode: a board's build compiles its target, firmware/targets/<board>.ts (the
// meter program plus the board's drivers). The simulator runs that same file (SimMeter
// bytecodeFile); there the drivers find no pins and the simulated sensors serve the roles.
import { spawn } from "node:child_process"
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs"
import { createRequire } from "node:module"
import { tmpdir } from "node:os"
import { createHash } from "node:crypto"
import { join, relative, resolve } from "node:path"
import { parseEnvSettings } from "../sim/src/settings-files.js"
import { paths } from "../sim/src/paths.js"
import { boardHardwareErrors, tlsError, knownBoards, settingsBankBytes, unknownBoardMessage } from "./boards.js"
import { queueFootprintError } from "../bridge/src/tunables/storage-budget.js"
import { CliError, usage } from "./errors.js"

const require = createRequire(import.meta.url)
export const devsBin = () => require.resolve("@devicescript/cli/built/devicescript-cli.cjs")

export type Print = (line: string) => void

/** Runs a command, streaming its output lines with a prefix; resolves with exit code and output. */
export function run(cmd: string, args: string[], cwd: string, print: Print, prefix: string) {
  return new Promise<{ code: number; output: string }>((resolveRun) => {
    const p = spawn(cmd, args, { cwd, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1" } })
    let output = ""
    const onData = (b: Buffer) => {
      output += b
      for (const l of String(b).split(/\r?\n/))
        // eslint-disable-next-line no-control-regex
        if (l.trim()) print(prefix + l.replace(/\u001b\[[0-9;]*m/g, ""))
    }
    p.stdout.on("data", onData)
    p.stderr.on("data", onData)
    p.on("error", (e) => resolveRun({ code: 127, output: output + e.message }))
    p.on("close", (code) => resolveRun({ code: code ?? 1, output }))
  })
}

export function checkBoard(board: string) {
  const boards = knownBoards()
  if (!boards.has(board)) throw usage(unknownBoardMessage(board))
}

export interface BuildOptions {
  board: string
  /** Directory with .env.defaults (and .env.local) from `citymeter provision`. */
  settings?: string
  out?: string
}

const SKIP = new Set([".env.defaults", ".env.local", ".devicescript", ".git", "data", "node_modules"])
/** What a build folder holds; a folder with anything else is not a build folder and is refused. */
const BUILD_FILES = [
  "bytecode.devs",
  "bytecode-dbg.json",
  "bytecode-sizes.md",
  "build.json",
  ".env.defaults",
  ".env.local",
]

/** The entry a board compiles: its target (program + drivers); 'sim' is the program alone. */
export function entryFor(board: string): string {
  if (board === "sim") return "firmware/main.ts"
  const entry = `firmware/targets/${board}.ts`
  if (existsSync(join(paths.root, entry))) return entry
  const targets = readdirSync(join(paths.root, "firmware/targets"))
    .filter((f) => f.endsWith(".ts"))
    .map((f) => f.slice(0, -3))
  throw usage(
    `board '${board}' has no citymeter target (${entry}): a meter built without its drivers measures nothing; ` +
      `use one of ${targets.join(", ")} (or 'sim'), or add boards/${board}.board.json and ${entry}`,
  )
}

export interface BuildResult {
  dir: string
  bytecode: string
  size: number
  sha256: string
  entry: string
}

/** Empties a build folder (only the files a build writes), or refuses a folder that holds anything else. */
function cleanBuildDir(out: string) {
  if (!existsSync(out)) return mkdirSync(out, { recursive: true })
  const ours = (f: string) => BUILD_FILES.includes(f) || f.startsWith("bundle-")
  const foreign = readdirSync(out).filter((f) => !ours(f))
  if (foreign.length)
    throw usage(`${out} is not a build folder (it holds ${foreign.slice(0, 3).join(", ")}): pick another --out`)
  for (const f of readdirSync(out)) if (ours(f)) rmSync(join(out, f), { force: true })
}

/** Makes a staging directory: the repository linked in (no .git), the given settings files copied. */
export function stage(settingsDir: string | undefined): string {
  const dir = mkdtempSync(join(tmpdir(), "citymeter-build-"))
  for (const entry of readdirSync(paths.root))
    if (!SKIP.has(entry)) symlinkSync(join(paths.root, entry), join(dir, entry))
  // node_modules must resolve from the stage too (the compiler walks up from the sources)
  symlinkSync(join(paths.root, "node_modules"), join(dir, "node_modules"))
  mkdirSync(join(dir, ".devicescript"))
  if (settingsDir)
    for (const f of [".env.defaults", ".env.local"])
      if (existsSync(join(settingsDir, f))) copyFileSync(join(settingsDir, f), join(dir, f))
  return dir
}

export const sha256 = (f: string) => createHash("sha256").update(readFileSync(f)).digest("hex")

export async function build(o: BuildOptions, print: Print): Promise<BuildResult> {
  checkBoard(o.board)
  const entry = entryFor(o.board)
  const settingsDir = o.settings ? resolve(o.settings) : paths.root
  const defaultsFile = join(settingsDir, ".env.defaults")
  if (o.settings && !existsSync(defaultsFile))
    throw usage(`${defaultsFile} not found: run \`citymeter provision --out ${o.settings}\` first`)
  let settings: Record<string, unknown> = {}
  if (o.settings) {
    settings = parseEnvSettings(readFileSync(defaultsFile, "utf8"))
    if (settings.BOARD !== o.board)
      throw usage(`the settings in ${o.settings} are for board '${settings.BOARD}', not '${o.board}'`)
  }
  // issue 20: settings made before provision refused mqtts:// on a Pico W, or edited by hand
  const noTls = settings.MQTT_PROTO === "tls" ? tlsError(o.board) : undefined
  if (noTls) throw usage(`the settings in ${o.settings} ask for TLS: ${noTls}`)
  const hardware = boardHardwareErrors(o.board)
  if (hardware.length) throw usage(hardware.join("; "))
  const storage = queueFootprintError(o.board, settingsBankBytes(o.board), settings)
  if (storage) throw usage(storage)
  // one folder per meter (its settings folder) or per board: never another meter's .env.local
  const out = resolve(
    o.out ?? (o.settings ? join(settingsDir, "build") : join(paths.root, ".devicescript/boards", o.board)),
  )
  cleanBuildDir(out)
  const t0 = Date.now()
  const step = (n: number, what: string) => print(`[${n}/3] ${what} (${((Date.now() - t0) / 1000).toFixed(1)} s)`)

  step(1, "generating code from proto/citymeter/v1/citymeter.proto")
  const gen = await run(process.execPath, ["--import", "tsx", "scripts/gen-proto.ts"], paths.root, print, "  ")
  if (gen.code) throw new CliError(`code generation failed (exit ${gen.code})`)

  step(2, `compiling ${entry} for ${o.board} with devs build`)
  const dir = stage(o.settings ? settingsDir : paths.root)
  try {
    const devs = await run(process.execPath, [devsBin(), "build", entry], dir, print, "  devs: ")
    const bytecode = join(dir, ".devicescript/bin/bytecode.devs")
    if (devs.code || !existsSync(bytecode)) throw new CliError(`devs build failed (exit ${devs.code})`)

    step(3, `writing ${relative(process.cwd(), out) || "."}`)
    for (const f of ["bytecode.devs", "bytecode-dbg.json", "bytecode-sizes.md"])
      if (existsSync(join(dir, ".devicescript/bin", f))) copyFileSync(join(dir, ".devicescript/bin", f), join(out, f))
    // devs keeps settings out of the .devs file and deploys them with it: keep them side by side
    for (const f of [".env.defaults", ".env.local"])
      if (existsSync(join(dir, f))) copyFileSync(join(dir, f), join(out, f))
    const file = join(out, "bytecode.devs")
    const size = statSync(file).size
    const digest = sha256(file)
    // the version the firmware's Birth reports (citymeter-fw <version>), which a release is registered under
    const version = /VERSION = "([^"]+)"/.exec(readFileSync(join(paths.root, "firmware/gen/version.ts"), "utf8"))?.[1]
    const manifest = { board: o.board, entry, size, sha256: digest, version, settings: o.settings ? settingsDir : null }
    writeFileSync(join(out, "build.json"), JSON.stringify(manifest, null, 2) + "\n")
    print(
      `built ${file}: ${size} bytes of bytecode (${entry}) for ${o.board}` +
        (o.settings ? `, settings from ${o.settings}` : ", repository settings"),
    )
    print(`sha256 ${digest}; \`citymeter sim\` and the tests run this same file (SimMeter bytecodeFile)`)
    if (o.board !== "sim")
      print(
        `next: citymeter flash --board ${o.board} --program ${relative(process.cwd(), out) || "."} --file <runtime image>` +
          ` (programs this bytecode with its settings${o.settings ? ` from ${o.settings}` : ""})`,
      )
    print(`done in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
    return { dir: out, bytecode: file, size, sha256: digest, entry }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
