// `citymeter build`, `flash` and `deploy`: the DeviceScript CLI (devs) with citymeter's layout.
// The build runs in a staging directory that links the repository (not .git: the compiler then
// stamps no git hash or build time, so the same sources and settings give the same bytes) and
// holds the chosen settings files, because `devs build` reads ./.env.defaults and ./.env.local
// from where it runs: a provisioned meter's settings never overwrite the repository's, and
// concurrent builds do not share .devicescript/bin.
//
// One bytecode: a board's build compiles its target, firmware/targets/<board>.ts (the
// meter program plus the board's drivers). The simulator runs that same file (SimMeter
// bytecodeFile); there the drivers find no pins and the simulated sensors serve the roles.
import { spawn } from "node:child_process"
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs"
import { createRequire } from "node:module"
import { tmpdir } from "node:os"
import { createHash } from "node:crypto"
import { basename, join, relative, resolve } from "node:path"
import { parseEnvSettings } from "../sim/src/meter.js"
import { paths } from "../sim/src/paths.js"
import {
  boardArch,
  boardFamily,
  boardHardwareErrors,
  tlsError,
  customBoard,
  knownBoards,
  settingsBankBytes,
  unknownBoardMessage,
} from "./boards.js"
import { queueFootprintError } from "../bridge/src/tunables/storage-budget.js"
import { CliError, usage } from "./errors.js"

const require = createRequire(import.meta.url)
const devsBin = () => require.resolve("@devicescript/cli/built/devicescript-cli.cjs")

export type Print = (line: string) => void

/** Runs a command, streaming its output lines with a prefix; resolves with exit code and output. */
function run(cmd: string, args: string[], cwd: string, print: Print, prefix: string) {
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

function checkBoard(board: string) {
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
function stage(settingsDir: string | undefined): string {
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
    const manifest = { board: o.board, entry, size, sha256: digest, settings: o.settings ? settingsDir : null }
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

/** The URL DeviceScript downloads a board's runtime image from (a custom board: its chip's bare image). */
export function runtimeImageUrl(board: string): string | undefined {
  const text = readFileSync(devsBin(), "utf8")
  const at = text.indexOf(`${board}: {\n`)
  if (at >= 0) {
    const own = /\$fwUrl: "([^"]+)"/.exec(text.slice(at, at + 600))?.[1]
    if (own) return own
  }
  const arch = boardArch(board)
  if (!arch) return undefined
  return new RegExp(
    `bareUrl: "([^"]+/devicescript-(?:esp32-)?${arch}-[^"]+|[^"]+/devicescript-rp2040-${arch}[^"]*)"`,
  ).exec(text)?.[1]
}

/**
 * What an image puts in flash, contiguous: a .bin as it is (offset 0), a UF2 (microsoft/uf2:
 * 512-byte blocks, target address at byte 12, payload size at 16, payload from 32) flattened from
 * its lowest target address, gaps 0xff. A UF2 splits the program across blocks, so the bytecode is
 * searched for here, not in the file.
 */
export function flashContents(image: Buffer): { base: number; bytes: Buffer } {
  const isUf2 = (at: number) => image.readUInt32LE(at) === 0x0a324655 && image.readUInt32LE(at + 4) === 0x9e5d5157
  if (image.length < 512 || !isUf2(0)) return { base: 0, bytes: image }
  const blocks: Array<[number, Buffer]> = []
  for (let at = 0; at + 512 <= image.length; at += 512)
    if (isUf2(at)) {
      const size = image.readUInt32LE(at + 16)
      blocks.push([image.readUInt32LE(at + 12), image.subarray(at + 32, at + 32 + Math.min(size, 476))])
    }
  const base = Math.min(...blocks.map(([a]) => a))
  const end = Math.max(...blocks.map(([a, d]) => a + d.length))
  const bytes = Buffer.alloc(end - base, 0xff)
  for (const [a, d] of blocks) d.copy(bytes, a - base)
  return { base, bytes }
}

export interface FlashOptions {
  board: string
  /** Runtime image (.bin, .uf2), instead of downloading it. */
  file?: string
  port?: string
  once?: boolean
  /** A build folder (citymeter build): flash runtime + this bytecode + its settings as one image. */
  program?: string
}

/** Checks --port against the board family before anything runs; returns the devs flash arguments. */
function flashArgs(o: FlashOptions, image: string | undefined): string[] {
  const family = boardFamily(o.board)
  const args = [devsBin(), "flash"]
  if (o.port) {
    if (family === "rp2040")
      throw usage(
        `--port does not apply to ${o.board}: RP2040 boards are flashed as a USB drive (hold BOOTSEL while plugging in), not over a serial port`,
      )
    if (family !== "esp32") throw usage(`--port does not apply to ${o.board}`)
    if (!existsSync(o.port)) throw new CliError(`no device at ${o.port}: connect the ${o.board} board and retry`)
    args.push("esp32", "--port", o.port)
  }
  args.push("--board", o.board)
  if (image) args.push("--file", image)
  if (o.once || o.program) args.push("--once")
  return args
}

/** Serialises `devs bundle` runs: it listens on fixed ports 8081–8083 (devtools' ports). */
export const BUNDLE_LOCK_FILE = join(tmpdir(), "citymeter-devs-bundle.lock")

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

const lockHolder = () => {
  try {
    return Number(readFileSync(BUNDLE_LOCK_FILE, "utf8").trim())
  } catch {
    return 0
  }
}

/**
 * Runs `f` holding the bundle lock: waits for it, takes over a lock whose process is gone, and
 * runs `f` at once when this process holds it already (nested use).
 */
export async function withBundleLock<T>(f: () => Promise<T>, timeoutMs = 600_000): Promise<T> {
  if (lockHolder() === process.pid) return f()
  const t0 = Date.now()
  for (;;) {
    try {
      const fd = openSync(BUNDLE_LOCK_FILE, "wx")
      writeSync(fd, String(process.pid))
      closeSync(fd)
      break
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e
    }
    const pid = lockHolder()
    if (pid > 0 && !alive(pid)) rmSync(BUNDLE_LOCK_FILE, { force: true })
    if (Date.now() - t0 > timeoutMs)
      throw new CliError(`waited ${timeoutMs / 1000} s for another devs bundle (${BUNDLE_LOCK_FILE}, pid ${pid})`)
    await new Promise((r) => setTimeout(r, 250))
  }
  try {
    return await f()
  } finally {
    if (lockHolder() === process.pid) rmSync(BUNDLE_LOCK_FILE, { force: true })
  }
}

/**
 * The runtime image committed in vendor/rp2040-runtime for a board, used when no --file is given:
 * a Pico W board (arch rp2040w, e.g. citymeter_picow) gets the Pico W runtime built from source
 * (vendor/rp2040-runtime/PROVENANCE.md), so flashing and deploying it need no download.
 */
export function vendoredRuntimeImage(board: string): string | undefined {
  if (boardArch(board) !== "rp2040w") return undefined
  const file = join(paths.root, "vendor/rp2040-runtime/devicescript-rp2040w.uf2")
  return existsSync(file) ? file : undefined
}

/**
 * Programs a build: the runtime image with the build's bytecode and settings in its flash store
 * (devs bundle), checked to be the very bytecode of the build folder. `o.file` is staged under the
 * name devs caches the board's runtime image as, so devs downloads nothing. Returns the image, kept
 * in the build folder as bundle-<image name>.
 */
export async function bundleProgram(o: FlashOptions, print: Print): Promise<string> {
  const dir = resolve(o.program!)
  const manifestFile = join(dir, "build.json")
  if (!existsSync(manifestFile)) throw usage(`${dir} is not a build folder: run \`citymeter build\` first`)
  const m = JSON.parse(readFileSync(manifestFile, "utf8")) as { board: string; entry: string; sha256: string }
  if (m.board !== o.board) throw usage(`${dir} was built for '${m.board}', not '${o.board}'`)
  if (sha256(join(dir, "bytecode.devs")) !== m.sha256) throw usage(`${dir}/bytecode.devs changed since its build`)
  const url = runtimeImageUrl(o.board)
  const st = stage(dir)
  try {
    // devs bundle compiles the entry again: the stage is the build's, so the bytes must be the same
    const again = await run(process.execPath, [devsBin(), "build", m.entry, "--quiet"], st, () => {}, "")
    const rebuilt = join(st, ".devicescript/bin/bytecode.devs")
    if (again.code || !existsSync(rebuilt)) throw new CliError(`devs build failed (exit ${again.code})`)
    if (sha256(rebuilt) !== m.sha256)
      throw new CliError(
        `the sources changed since ${dir} was built (bytecode differs): run \`citymeter build\` again, test it, then program`,
      )
    print(
      `bytecode ${m.sha256.slice(0, 16)}… is the build's (${m.entry}); bundling it with the runtime and its settings`,
    )
    if (o.file && url) {
      // devs bundle looks for the runtime image in its cache before downloading it
      mkdirSync(join(st, ".devicescript/cache"), { recursive: true })
      copyFileSync(resolve(o.file), join(st, ".devicescript/cache", basename(url)))
    }
    const out = join(st, "bundle-" + basename(url ?? o.file ?? "image.bin"))
    // quiet: a download that cannot happen here is one line, not a stack trace
    const b = await withBundleLock(() =>
      run(process.execPath, [devsBin(), "bundle", "--board", o.board, "--flash-file", out, m.entry], st, () => {}, ""),
    )
    if (b.code || !existsSync(out)) {
      if (!o.file && /fetch|ENOTFOUND|EAI_AGAIN|getaddrinfo|ENETUNREACH|ETIMEDOUT/i.test(b.output))
        throw new CliError(
          `cannot download the ${o.board} runtime image here (no internet): pass it with --file <image> (from ${url ?? "the DeviceScript releases"})`,
        )
      const why = /(?:Error|error):? ([^\n]+)/.exec(b.output)?.[1] ?? `exit ${b.code}`
      throw new CliError(
        `devs bundle failed: ${why.trim()}${o.file ? ` (is ${o.file} the DeviceScript runtime image for ${o.board}?)` : ""}`,
      )
    }
    // the image must carry the build's bytes (the program sits whole in the settings/program store)
    const flat = flashContents(readFileSync(out))
    const at = flat.bytes.indexOf(readFileSync(join(dir, "bytecode.devs")))
    if (at < 0) throw new CliError(`the bundled image does not contain ${dir}/bytecode.devs`)
    const keep = join(dir, basename(out))
    copyFileSync(out, keep)
    print(`the image holds the build's bytecode byte for byte (at 0x${(flat.base + at).toString(16)})`)
    print(`wrote ${keep}: runtime + program + settings, one image`)
    return keep
  } finally {
    rmSync(st, { recursive: true, force: true })
  }
}

export async function flash(o: FlashOptions, print: Print): Promise<void> {
  checkBoard(o.board)
  if (o.board === "sim") throw usage("board 'sim' is the simulator: run `citymeter sim` instead of flashing")
  if (o.file && !existsSync(o.file)) throw usage(`runtime image ${o.file} not found`)
  const vendored = o.file ? undefined : vendoredRuntimeImage(o.board)
  if (vendored) {
    print(`runtime image: ${relative(process.cwd(), vendored)} (committed, built from source; --file overrides it)`)
    o = { ...o, file: vendored }
  }
  flashArgs(o, undefined) // --port is checked before anything is built or downloaded
  const custom = customBoard(o.board)
  const url = runtimeImageUrl(o.board)
  const image = o.program ? await bundleProgram(o, print) : o.file ? resolve(o.file) : undefined
  const args = flashArgs(o, image)
  print(
    image
      ? `flashing ${image} to ${o.board}`
      : `flashing the DeviceScript runtime for ${o.board}; devs downloads it from ${url ?? "the DeviceScript releases"}`,
  )
  // devs's own output only when the failure is not one of the known ones below
  const r = await run(process.execPath, args, paths.root, () => {}, "")
  const failed = r.code !== 0 || /fatal error|Error:/i.test(r.output)
  if (!failed) {
    print(
      o.program
        ? `programmed ${o.board} with ${o.program}`
        : `flashed the runtime to ${o.board}; program it with \`citymeter flash --board ${o.board} --program <build folder> --file <image>\``,
    )
    return
  }
  const noDevice = /no drives found|no device|no viable ports|not found.*port|no serial|udevadm|ENOENT|no ports/i.test(
    r.output,
  )
  const offline = /ENOTFOUND|EAI_AGAIN|getaddrinfo|fetch failed|ENETUNREACH|ETIMEDOUT/.test(r.output)
  if (!image && offline)
    throw new CliError(
      `the runtime image for ${o.board} cannot be downloaded here (no internet${custom ? "; a custom board uses its chip's bare image" : ""}): ` +
        `download it on a connected machine${url ? ` from ${url}` : ""} and pass it with --file <image.bin|image.uf2>`,
    )
  if (/esptool/i.test(r.output) && !noDevice)
    throw new CliError("esptool is not installed: `pip install esptool` (ESP32 boards are flashed with it)")
  if (noDevice || boardFamily(o.board) === "rp2040")
    throw new CliError(
      boardFamily(o.board) === "rp2040"
        ? `no device: no RP2040 drive found; plug the ${o.board} in while holding BOOTSEL and retry`
        : `no device: no ${o.board} board on a serial port; connect it (or pass --port <path>) and retry`,
    )
  for (const l of r.output.split(/\r?\n/).slice(-20)) if (l.trim()) print(`  devs: ${l}`)
  throw new CliError(`devs flash failed (exit ${r.code}); its output is above`)
}

export interface DeployOptions {
  board: string
  settings: string
  file?: string
  port?: string
}

/** Build → program: the build folder's bytecode and settings go onto the board as one image. */
export async function deploy(o: DeployOptions, print: Print): Promise<void> {
  if (o.board === "sim") throw usage("board 'sim' is the simulator: run `citymeter sim` instead of deploying")
  if (o.file && !existsSync(o.file)) throw usage(`runtime image ${o.file} not found`)
  flashArgs({ board: o.board, port: o.port }, undefined) // --port refused or checked before building
  const r = await build({ board: o.board, settings: o.settings }, () => {})
  print(`[build] ${r.bytecode}: ${r.size} B (${r.entry}), sha256 ${r.sha256.slice(0, 16)}…`)
  await flash({ board: o.board, file: o.file, port: o.port, program: r.dir, once: true }, print)
}
