import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"

// the checkout: sim/src/ → ../.. from the sources; compiled, dist/sim/src/ → ../../.. (the firmware's
// build, the boards' sources and the demo's flash files stay in the checkout, not in dist/)
const here = dirname(fileURLToPath(import.meta.url))
const root = resolve(here, import.meta.url.endsWith(".ts") ? "../.." : "../../..")

/** Where the build puts things (run from anywhere; DeviceScript builds from the repo root). */
export const paths = {
  root,
  // npm run build:firmware copies the build here: `devs run --test` overwrites .devicescript/bin
  bytecode: join(root, ".devicescript/firmware/bytecode.devs"),
  servicesJson: join(root, ".devicescript/services.json"),
  envDefaults: join(root, ".env.defaults"),
  envLocal: join(root, ".env.local"),
}
