// Builds the dashboard (web/) into web/dist: one JS bundle (esbuild, uPlot included) and one CSS
// file, served by the bridge from the package at / and /ui/ (bridge/src/routes/dashboard.ts).
// web/dist is generated and gitignored. `npm run build:web`; also part of `npm run build`.
import { copyFile, mkdir } from "node:fs/promises"
import { fileURLToPath } from "node:url"
import * as esbuild from "esbuild"

const root = fileURLToPath(new URL("../", import.meta.url))

export async function buildWeb(opts: { minify?: boolean } = {}) {
  const outdir = `${root}web/dist`
  await mkdir(outdir, { recursive: true })
  const result = await esbuild.build({
    absWorkingDir: root,
    entryPoints: { app: "web/src/main.ts", style: "web/src/style.css" },
    bundle: true,
    minify: opts.minify ?? true,
    sourcemap: "linked",
    format: "esm",
    target: ["es2022"],
    outdir,
    metafile: true,
    logLevel: "warning",
  })
  await copyFile(`${root}web/index.html`, `${outdir}/index.html`)
  return Object.fromEntries(Object.entries(result.metafile.outputs).map(([f, o]) => [f, o.bytes]))
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const outputs = await buildWeb()
  for (const [f, bytes] of Object.entries(outputs)) console.log(`web: ${f} ${bytes} bytes`)
}
