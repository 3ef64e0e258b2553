// `citymeter flash` and `deploy`: a board's runtime image, alone or bundled with a build's bytecode
// and settings (devs bundle, checked to hold the build's very bytes), written to the board with
// devs flash. The build itself: cli/build.ts.
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from "node:fs"
import { tmpdir } from "node:os"
import { basename, join, relative, resolve } from "node:path"
import { paths } from "../sim/src/paths.js"
import { boardArch, boardFamily, customBoard } from "./boards.js"
import { build, checkBoard, devsBin, run, sha256, stage, type Print } from "./build.js"
import { CliError, usage } from "./errors.js"

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
