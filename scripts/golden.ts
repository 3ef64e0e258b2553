// Writes proto/golden/<name>.hex from <name>.json with protobufjs (run after adding a golden
// frame: `npm run golden`). The .hex files are committed: the firmware's encoder and the bridge's
// decoder are both tested against them, so a change to the wire shows up as a diff here.
import { readdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { encodeGolden, goldenDir, sealGolden, sealedDir } from "../testkit/golden.js"

for (const f of readdirSync(goldenDir).filter((n) => n.endsWith(".json"))) {
  const { message, json } = JSON.parse(readFileSync(join(goldenDir, f), "utf8"))
  const hex = encodeGolden(message, json)
  writeFileSync(join(goldenDir, f.replace(/\.json$/, ".hex")), hex + "\n")
  console.log(`${f.replace(/\.json$/, "")}: ${hex.length / 2} bytes`)
}

// sealed copies of golden frames (proto/golden/sealed/<name>.json: {message, of, key, nonce?, link?})
for (const f of readdirSync(sealedDir).filter((n) => n.endsWith(".json"))) {
  const hex = sealGolden(JSON.parse(readFileSync(join(sealedDir, f), "utf8")))
  writeFileSync(join(sealedDir, f.replace(/\.json$/, ".hex")), hex + "\n")
  console.log(`sealed/${f.replace(/\.json$/, "")}: ${hex.length / 2} bytes`)
}
