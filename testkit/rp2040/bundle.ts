// The flashable image of a board build for the emulator: exactly the bytecode `citymeter build
// --board <board>` produces, bundled by `devs bundle` (cli/flash.ts bundleProgram, which checks
// the bytecode sits byte for byte in the image) with the plain Pico runtime
// (vendor/rp2040-runtime/devicescript-rp2040.uf2, no CYW43: the Pico W image needs a Wi-Fi chip
// rp2040js does not have), staged under the name devs caches the board's runtime as, so nothing is
// downloaded. Images are cached per bytecode sha256, runtime and settings under
// .devicescript/rp2040-images/.
//
// `devs bundle` listens on fixed ports 8081–8083: bundles run one at a time, across test files and
// worktrees (cli/flash.ts withBundleLock, a lock file in the system's temporary directory, which
// bundleProgram takes too; here it is held over the build as well).

import { createHash } from "node:crypto"
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { build, type Print } from "../../cli/build.js"
import { bundleProgram, withBundleLock } from "../../cli/flash.js"
import { provision } from "../../cli/provision.js"
import { paths } from "../../sim/src/paths.js"
import { PICO_RUNTIME_UF2 } from "./board.js"

export { BUNDLE_LOCK_FILE, withBundleLock } from "../../cli/flash.js"
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
      // the bundle also carries the build's settings (.env.defaults, .env.local): they are part of the key
      const settings = createHash("sha256")
      for (const f of [".env.defaults", ".env.local"])
        settings.update(f + "\0" + (existsSync(join(r.dir, f)) ? readFileSync(join(r.dir, f), "utf8") : "") + "\0")
      const key = `${r.sha256.slice(0, 24)}-${fileSha(runtime).slice(0, 12)}-${settings.digest("hex").slice(0, 12)}`
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

/** The ADE7953 probe period of `quickMeterImage` (ADE_RETRY_S, s). */
export const QUICK_ADE_RETRY_S = 5

/**
 * A provisioned, open citymeter_picow meter at the quickest settings allow (a frame every second:
 * INTERVAL_S=1, BATCH=1; an absent ADE7953 probed again every QUICK_ADE_RETRY_S), bundled once
 * for the board tests that need emulated time to pass quickly (one bundle, shared through the cache).
 */
export async function quickMeterImage(): Promise<BundledImage> {
  const dir = join(mkdtempSync(join(tmpdir(), "cm-rp2040-quick-")), "meter")
  try {
    provision(
      {
        meterId: "rp-quick-1",
        board: "citymeter_picow",
        broker: "mqtt://10.0.0.2:1883",
        intervalS: 1,
        batch: 1,
        open: true,
        adeRetryS: QUICK_ADE_RETRY_S,
      },
      dir,
    )
    return await bundledImage("citymeter_picow", { settings: dir })
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
