// A meter's settings files as DeviceScript writes them (.env.defaults, .env.local secrets): read by
// the simulator to provision its VMs and by `citymeter build` for a board's defaults.
import { existsSync, readFileSync } from "node:fs"
import { paths } from "./paths.js"

/** Settings as .env files write them: the value is JSON when it parses as JSON, else a string. */
export function parseEnvSettings(text: string): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {}
  for (const line of text.split(/\r?\n/)) {
    const m = /^\s*([^#=\s][^=]*?)\s*=([^#]*)/.exec(line)
    if (!m) continue
    const raw = m[2].trim()
    if (!raw.length) continue
    try {
      out[m[1]] = JSON.parse(raw)
    } catch {
      out[m[1]] = raw
    }
  }
  return out
}

export function defaultSettings(): Record<string, string | number | boolean> {
  const read = (f: string) => (existsSync(f) ? parseEnvSettings(readFileSync(f, "utf8")) : {})
  return { ...read(paths.envDefaults), ...read(paths.envLocal) }
}
