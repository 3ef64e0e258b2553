// The one version number of citymeter: package.json "version". The CLI (--version), the OpenAPI
// document and the firmware's Birth (firmware/gen/version.ts, written by `npm run gen`) read it here.
import { readFileSync } from "node:fs"

export const VERSION: string = (
  JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }
).version
