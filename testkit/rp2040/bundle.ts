// The flashable image of a board build for the emulator: exactly the bytecode `citymeter build
// --board <board>` produces, bundled by `devs bundle` (cli/firmware.ts bundleProgram, which checks
// the bytecode sits byte for byte in the image) with the plain Pico runtime
// (vendor/rp2040-runtime/devicescript-rp2040.uf2, no CYW43: the Pico W image needs a Wi-Fi chip
// rp2040js does not have), staged under the name devs caches the board's runtime as, so nothing is
// downloaded. Images are cached per bytecode sha256 (and runtime) under .devicescript/rp2040-images/.
//
// `devs bundle` listens on fixed ports 8081–8083 and builds write .devicescript/boards/<board>, so
// builds and bundles run one at a time, across test files and worktrees: a lock file in the
// system's temporary directory.

import { createHash } from "node:crypto"
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { build, bundleProgram, type Print } from "../../cli/firmware.js"
import { paths } from "../../sim/src/paths.js"
import { PICO_RUNTIME_UF2 } from "./board.js"

export const LOCK_FILE = join(tmpdir(), "citymeter-devs-bundle.lock")
export const IMAGE_CACHE = join(paths.root, ".devicescript/rp2040-images")

export interface BundledImage {
  /** The UF2: runtime + program + settings. */
  uf2: string
  /** sha256 of the bytecode (the build's build.json). */
  sha256: string
  /** The build's bytecode.devs bytes. */
  bytecode: Buffer
  /** True when the image came from the cache. */
  cached: boolean
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** Runs `f` holding the bundle lock (waits for it; a lock whose process is gone is taken over). */
export async function withBundleLock<T>(f: () => Promise<T>, timeoutMs = 600_000): Promise<T> {
  const t0 = Date.now()
  for (;;) {
    try {
      const fd = openSync(LOCK_FILE, "wx")
      writeSync(fd, String(process.pid))
      closeSync(fd)
      break
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e
      const pid = Number(readFileSafe(LOCK_FILE))
      if (pid > 0 && !alive(pid)) rmSync(LOCK_FILE, { force: true })
      if (Date.now() - t0 > timeoutMs) throw new Error(`waited ${timeoutMs} ms for ${LOCK_FILE} (pid ${pid})`)
      await new Promise((r) => setTimeout(r, 250))
    }
  }
  try {
    return await f()
  } finally {
    if (readFileSafe(LOCK_FILE) === String(process.pid)) rmSync(LOCK_FILE, { force: true })
  }
}

function readFileSafe(f: string): string {
  try {
    return readFileSync(f, "utf8").trim()
  } catch {
    return ""
  }
}

const fileSha = (f: string) => createHash("sha256").update(readFileSync(f)).digest("hex")

/**
 * Builds `board` as `citymeter build --board <board>` does and bundles it with `runtime` (the
 * plain Pico image by default) into a UF2 for the emulated board; reuses a cached image of the same
 * bytecode and runtime.
 */
export async function bundledImage(
  board = "citymeter_picow",
  o: { runtime?: string; settings?: string; print?: Print } = {},
): Promise<BundledImage> {
  const print = o.print ?? (() => {})
  const runtime = o.runtime ?? PICO_RUNTIME_UF2
  return withBundleLock(async () => {
    const out = join(tmpdir(), `citymeter-rp2040-build-${process.pid}-${board}`)
    rmSync(out, { recursive: true, force: true })
    try {
      const r = await build({ board, settings: o.settings, out }, print)
      const bytecode = readFileSync(r.bytecode)
      mkdirSync(IMAGE_CACHE, { recursive: true })
      // the settings ride in the image beside the bytecode (devs bundle): a meter's settings are part
      // of the key, or a provisioned build would get the image of another meter's settings
      const settings = [".env.defaults", ".env.local"].map((f) => join(r.dir, f)).filter((f) => existsSync(f))
      const settingsSha = createHash("sha256")
      for (const f of settings) settingsSha.update(f.slice(r.dir.length)).update(readFileSync(f))
      const key = `${r.sha256.slice(0, 24)}-${fileSha(runtime).slice(0, 12)}-${settingsSha.digest("hex").slice(0, 12)}`
      const cacheFile = join(IMAGE_CACHE, `${board}-${key}.uf2`)
      if (existsSync(cacheFile)) return { uf2: cacheFile, sha256: r.sha256, bytecode, cached: true }
      const image = await bundleProgram({ board, program: r.dir, file: runtime }, print)
      copyFileSync(image, cacheFile)
      return { uf2: cacheFile, sha256: r.sha256, bytecode, cached: false }
    } finally {
      rmSync(out, { recursive: true, force: true })
    }
  })
}
