import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..")

/** Where the build puts things (run from anywhere; DeviceScript builds from the repo root). */
export const paths = {
  root,
  // npm run build:firmware copies the build here: `devs run --test` overwrites .devicescript/bin
  bytecode: join(root, ".devicescript/firmware/bytecode.devs"),
  servicesJson: join(root, ".devicescript/services.json"),
  envDefaults: join(root, ".env.defaults"),
  envLocal: join(root, ".env.local"),
}
