// `citymeter build` and `citymeter flash`: the DeviceScript CLI (devs) with citymeter's layout.
// The build runs in a staging directory that links the repository and holds the chosen settings
// files, because `devs build` reads ./.env.defaults and ./.env.local from where it runs: a
// provisioned meter's settings never overwrite the repository's, and concurrent builds do not
// share .devicescript/bin. The bytecode is the same for every board (the firmware reads BOARD from
// its settings); the board is checked against the settings and names the output directory.
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
} from "node:fs"
import { createRequire } from "node:module"
import { tmpdir } from "node:os"
import { join, relative, resolve } from "node:path"
import { parseEnvSettings } from "../sim/src/meter.js"
import { paths } from "../sim/src/paths.js"
import { customBoard, knownBoards } from "./boards.js"
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
  if (!boards.has(board)) throw usage(`unknown board '${board}': use one of ${[...boards].sort().join(", ")}`)
}

export interface BuildOptions {
  board: string
  /** Directory with .env.defaults (and .env.local) from `citymeter provision`. */
  settings?: string
  out?: string
}

const SKIP = new Set([".env.defaults", ".env.local", ".devicescript", ".git", "data", "node_modules"])

export async function build(o: BuildOptions, print: Print): Promise<string> {
  checkBoard(o.board)
  const settingsDir = o.settings ? resolve(o.settings) : paths.root
  const defaultsFile = join(settingsDir, ".env.defaults")
  if (o.settings && !existsSync(defaultsFile))
    throw usage(`${defaultsFile} not found: run \`citymeter provision --out ${o.settings}\` first`)
  if (o.settings) {
    const s = parseEnvSettings(readFileSync(defaultsFile, "utf8"))
    if (s.BOARD !== o.board) throw usage(`the settings in ${o.settings} are for board '${s.BOARD}', not '${o.board}'`)
  }
  const out = resolve(o.out ?? join(paths.root, ".devicescript/boards", o.board))
  const t0 = Date.now()
  const step = (n: number, what: string) => print(`[${n}/3] ${what} (${((Date.now() - t0) / 1000).toFixed(1)} s)`)

  step(1, "generating code from proto/citymeter/v1/citymeter.proto")
  const gen = await run(process.execPath, ["--import", "tsx", "scripts/gen-proto.ts"], paths.root, print, "  ")
  if (gen.code) throw new CliError(`code generation failed (exit ${gen.code})`)

  step(2, `compiling firmware/main.ts for ${o.board} with devs build`)
  const stage = mkdtempSync(join(tmpdir(), "citymeter-build-"))
  try {
    for (const entry of readdirSync(paths.root))
      if (!SKIP.has(entry)) symlinkSync(join(paths.root, entry), join(stage, entry))
    // node_modules must resolve from the stage too (the compiler walks up from the sources)
    symlinkSync(join(paths.root, "node_modules"), join(stage, "node_modules"))
    for (const f of [".env.defaults", ".env.local"])
      if (existsSync(join(settingsDir, f))) copyFileSync(join(settingsDir, f), join(stage, f))
    const devs = await run(process.execPath, [devsBin(), "build", "firmware/main.ts"], stage, print, "  devs: ")
    const bytecode = join(stage, ".devicescript/bin/bytecode.devs")
    if (devs.code || !existsSync(bytecode)) throw new CliError(`devs build failed (exit ${devs.code})`)

    step(3, `writing ${relative(process.cwd(), out) || "."}`)
    mkdirSync(out, { recursive: true })
    for (const f of ["bytecode.devs", "bytecode-dbg.json", "bytecode-sizes.md"])
      if (existsSync(join(stage, ".devicescript/bin", f)))
        copyFileSync(join(stage, ".devicescript/bin", f), join(out, f))
    // devs keeps settings out of the .devs file and deploys them with it: keep them side by side
    for (const f of [".env.defaults", ".env.local"])
      if (existsSync(join(stage, f))) copyFileSync(join(stage, f), join(out, f))
    const size = statSync(join(out, "bytecode.devs")).size
    print(
      `built ${join(out, "bytecode.devs")}: ${size} bytes of bytecode for ${o.board}` +
        (o.settings ? `, settings from ${o.settings}` : ", repository settings"),
    )
    print(
      `settings (.env.defaults, .env.local) are next to it: devs deploys them with the program; ` +
        `\`npx devs bundle firmware/main.ts --board ${o.board}\` (run with these settings) makes one flash image ` +
        `of runtime + program + settings where the runtime image can be downloaded`,
    )
    print(`done in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
    return join(out, "bytecode.devs")
  } finally {
    rmSync(stage, { recursive: true, force: true })
  }
}

/** The URL DeviceScript downloads a built-in board's runtime image from, when its bundle names one. */
export function runtimeImageUrl(board: string): string | undefined {
  const text = readFileSync(devsBin(), "utf8")
  const at = text.indexOf(`${board}: {\n`)
  if (at < 0) return undefined
  return /\$fwUrl: "([^"]+)"/.exec(text.slice(at, at + 600))?.[1]
}

export interface FlashOptions {
  board: string
  file?: string
  port?: string
  once?: boolean
}

export async function flash(o: FlashOptions, print: Print): Promise<void> {
  checkBoard(o.board)
  if (o.board === "sim") throw usage("board 'sim' is the simulator: run `citymeter sim` instead of flashing")
  if (o.file && !existsSync(o.file)) throw usage(`runtime image ${o.file} not found`)
  const custom = customBoard(o.board)
  const url = custom ? undefined : runtimeImageUrl(o.board)
  const args = [devsBin(), "flash", "--board", o.board]
  if (o.file) args.push("--file", resolve(o.file))
  if (o.once) args.push("--once")
  if (o.port) args.push("--port", o.port)
  print(
    o.file
      ? `flashing ${o.file} to ${o.board}`
      : `flashing the DeviceScript runtime for ${o.board}; devs downloads it from ${url ?? "the DeviceScript releases"}`,
  )
  const r = await run(process.execPath, args, paths.root, print, "  devs: ")
  const failed = r.code !== 0 || /fatal error|Error:/i.test(r.output)
  if (!failed) {
    print(
      `flashed the runtime to ${o.board}; deploy the program and its settings with \`npx devs devtools firmware/main.ts\``,
    )
    return
  }
  const offline = /ENOTFOUND|EAI_AGAIN|getaddrinfo|fetch failed|ECONNREFUSED|ETIMEDOUT|ENETUNREACH/.test(r.output)
  if (!o.file && (offline || custom))
    throw new CliError(
      `the runtime image for ${o.board} cannot be downloaded here (no internet access${custom ? ", or a custom board without an image URL" : ""}).\n` +
        `Download it on a connected machine${url ? ` from ${url}` : ""} and pass it with: citymeter flash --board ${o.board} --file <image.bin|image.uf2>`,
    )
  if (/esptool/i.test(r.output))
    throw new CliError("esptool is not installed: `pip install esptool` (ESP32 boards are flashed with it)")
  if (/no drives found/i.test(r.output))
    throw new CliError("no RP2040 drive found: plug the board in while holding BOOTSEL, then run flash again")
  if (/udevadm|serial|no device|ENOENT/i.test(r.output))
    throw new CliError(
      `no ${o.board} board found on a serial port: connect it (or pass --port <path>) and retry` +
        (o.file
          ? ""
          : `; offline, also pass the runtime image with --file (devs downloads it from ${url ?? "the DeviceScript releases"})`),
    )
  throw new CliError(`devs flash failed (exit ${r.code}); its output is above`)
}
