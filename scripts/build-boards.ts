// Builds the firmware for every board definition in boards/ (firmware/targets/<board>.ts) and
// reports the bytecode size per board. Fails when a board has no target or a build fails.
import { execFileSync } from "node:child_process"
import { copyFileSync, existsSync, mkdirSync, readdirSync, statSync } from "node:fs"
import { join, resolve, dirname } from "node:path"
import { fileURLToPath } from "node:url"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..")
const out = join(root, ".devicescript/boards")
mkdirSync(out, { recursive: true })
const boards = readdirSync(join(root, "boards"))
  .filter((f) => f.endsWith(".board.json"))
  .map((f) => f.replace(/\.board\.json$/, ""))
if (!boards.length) throw new Error("no board definitions in boards/")
for (const id of boards) {
  const entry = `firmware/targets/${id}.ts`
  if (!existsSync(join(root, entry))) throw new Error(`board ${id} has no ${entry}`)
  process.stdout.write(`build ${id} ... `)
  execFileSync(join(root, "node_modules/.bin/devs"), ["build", entry, "--quiet"], { cwd: root, stdio: "inherit" })
  const file = join(out, `${id}.devs`)
  copyFileSync(join(root, ".devicescript/bin/bytecode.devs"), file)
  console.log(`${statSync(file).size} bytes of bytecode`)
}
