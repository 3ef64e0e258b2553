// `citymeter flash --program` / `deploy` for citymeter_picow without --file: the image is bundled
// with the Pico W runtime committed in vendor/rp2040-runtime (built from source), so it needs no
// download. The runtime part of the bundle is that file's, byte for byte (an image downloaded from
// DeviceScript's releases is another build and would differ), and the build's bytecode is in it.
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { expect, test } from "vitest"
import { build } from "../../cli/build.js"
import { flash, flashContents, vendoredRuntimeImage } from "../../cli/flash.js"
import { withBundleLock } from "../../testkit/rp2040/bundle.js"

test("flashing a citymeter_picow build without --file bundles the committed Pico W runtime, offline", async () => {
  const runtime = vendoredRuntimeImage("citymeter_picow")
  expect(runtime).toMatch(/vendor\/rp2040-runtime\/devicescript-rp2040w\.uf2$/)
  expect(vendoredRuntimeImage("citymeter_esp32c3")).toBeUndefined()
  const out = mkdtempSync(join(tmpdir(), "citymeter-deploy-image-"))
  try {
    await withBundleLock(async () => {
      const r = await build({ board: "citymeter_picow", out }, () => {})
      const lines: string[] = []
      // there is no RP2040 drive here: programming fails at the very end, after the bundle
      await expect(flash({ board: "citymeter_picow", program: out }, (l) => lines.push(l))).rejects.toThrow(/no device/)
      expect(lines.join("\n")).toMatch(/runtime image: .*devicescript-rp2040w\.uf2 \(committed/)
      const bundle = flashContents(readFileSync(join(out, "bundle-devicescript-rp2040w-pico_w.uf2")))
      const vendored = flashContents(readFileSync(runtime!))
      expect(bundle.base).toBe(0x10000000)
      expect(bundle.bytes.subarray(0, vendored.bytes.length).equals(vendored.bytes)).toBe(true)
      const at = bundle.bytes.indexOf(readFileSync(r.bytecode))
      expect(at).toBeGreaterThan(0)
      // in the settings/program store (0x100e0000, 32 pages of 4 KB: devicescript-pico arch.json)
      expect(bundle.base + at).toBeGreaterThanOrEqual(0x100e0000)
      expect(bundle.base + at).toBeLessThan(0x100e0000 + 32 * 4096)
    })
  } finally {
    rmSync(out, { recursive: true, force: true })
  }
}, 600_000)
