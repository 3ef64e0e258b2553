// Builds the firmware for every board definition in boards/ with `citymeter build`'s own code
// (firmware/targets/<board>.ts, hardware and settings-bank checks) and reports the bytecode size
// per board. Each board's build folder is .devicescript/boards/<board>/; <board>.devs beside it is
// a byte-identical copy (checked) for the simulator and the tests.
import { copyFileSync, readdirSync, statSync } from "node:fs"
import { join, resolve, dirname } from "node:path"
import { fileURLToPath } from "node:url"
import { settingsBankBytes } from "../cli/boards.js"
import { build, sha256 } from "../cli/build.js"
import { storageBudget } from "../bridge/src/tunables/storage-budget.js"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..")
const out = join(root, ".devicescript/boards")
const boards = readdirSync(join(root, "boards"))
  .filter((f) => f.endsWith(".board.json"))
  .map((f) => f.replace(/\.board\.json$/, ""))
if (!boards.length) throw new Error("no board definitions in boards/")
const quiet = () => {}
for (const id of boards) {
  const r = await build({ board: id, out: join(out, id) }, quiet)
  const copy = join(out, `${id}.devs`)
  copyFileSync(r.bytecode, copy)
  if (sha256(copy) !== r.sha256) throw new Error(`${copy} differs from ${r.bytecode}`)
  const b = storageBudget(settingsBankBytes(id))
  console.log(
    `${id}: ${statSync(copy).size} bytes of bytecode (${r.entry}), sha256 ${r.sha256.slice(0, 12)}; ` +
      `queue ${b.slots} frames; settings bank ${b.bankBytes} B, ${b.usableBytes} B usable, ${b.usableBytes - b.freeBytes} B at most (queue, settings, runtime records, rewrite room; ${b.freeBytes} B spare)`,
  )
}
