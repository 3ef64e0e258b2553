#!/usr/bin/env node
// `citymeter` / `npx citymeter`: runs the compiled CLI (dist/cli/main.js, `npm run build`) in this
// process with plain Node, source maps on (a stack trace names the .ts file and line). In a checkout
// not built yet, or with CITYMETER_FROM_SOURCE=1 (the tests, which run the sources as they are),
// it runs cli/main.ts through tsx instead.
import { existsSync } from "node:fs"
import process from "node:process"
import { URL } from "node:url"

const compiled = new URL("../../dist/cli/main.js", import.meta.url)
if (process.env.CITYMETER_FROM_SOURCE !== "1" && existsSync(compiled)) {
  process.setSourceMapsEnabled(true)
  await import(compiled.href)
} else {
  const { register } = await import("tsx/esm/api")
  register()
  await import("../main.ts")
}
