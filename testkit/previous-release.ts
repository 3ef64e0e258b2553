// The previous release, run from this repository's own history, for the upgrade test
// (tests/system/upgrade-release.test.ts): its tree at the release commit (git archive, no network),
// its generated code (its own `npm run gen`), and its bridge as a process writing a data tier the
// way that release wrote it.
//
// Which commit: 0.2.0 is the last release (CHANGELOG "## 0.2.0 — 2026-11-23"; no git tags). The
// release was recorded by c926d2e ("CHANGELOG; …", 2026-11-23 10:41 UTC), the commit that wrote
// that entry; the first change listed under Unreleased came after it. Its data tier has no
// schema_version: every step of bridge/src/store/migrations.ts runs on it.
import { execFileSync, spawn, type ChildProcess } from "node:child_process"
import { createHash } from "node:crypto"
import {
  existsSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { paths } from "../sim/src/paths.js"

export const PREVIOUS_RELEASE = { version: "0.2.0", commit: "c926d2ef2e3e82257c8ecdb733439b47a0981641" } as const

const TSX = join(paths.root, "node_modules/tsx/dist/cli.mjs")

/** The installed version of a package, and the one the previous release's lockfile pins. */
export function pinnedVersions(tree: string, pkg: string) {
  const lock = JSON.parse(readFileSync(join(tree, "package-lock.json"), "utf8")) as {
    packages: Record<string, { version?: string }>
  }
  const installed = JSON.parse(readFileSync(join(paths.root, "node_modules", pkg, "package.json"), "utf8")) as {
    version: string
  }
  return { installed: installed.version, release: lock.packages[`node_modules/${pkg}`]?.version }
}

/**
 * The previous release's tree, generated code included, with this checkout's node_modules (the
 * test checks that the engine it writes with is the version the release pinned). Extracted once
 * per machine into the temporary directory and reused.
 */
export function previousReleaseTree(): string {
  const modules = realpathSync(join(paths.root, "node_modules"))
  // one per release and node_modules: a tree runs with the packages of the checkout that made it
  const key = createHash("sha256").update(`${PREVIOUS_RELEASE.commit} ${modules}`).digest("hex").slice(0, 12)
  const dir = join(tmpdir(), `citymeter-${PREVIOUS_RELEASE.version}-${key}`)
  if (existsSync(join(dir, ".ready"))) return dir
  try {
    execFileSync("git", ["-C", paths.root, "cat-file", "-e", `${PREVIOUS_RELEASE.commit}^{commit}`], { stdio: "pipe" })
  } catch {
    throw new Error(
      `the previous release's commit ${PREVIOUS_RELEASE.commit} is not in this clone: the upgrade test needs the history (git fetch --unshallow)`,
    )
  }
  const work = mkdtempSync(`${dir}-`)
  try {
    const tar = execFileSync("git", ["-C", paths.root, "archive", "--format=tar", PREVIOUS_RELEASE.commit], {
      maxBuffer: 64 << 20,
    })
    execFileSync("tar", ["-x", "-C", work], { input: tar })
    symlinkSync(modules, join(work, "node_modules"))
    execFileSync(process.execPath, [TSX, "scripts/gen-proto.ts"], { cwd: work, stdio: "pipe" })
    writeFileSync(join(work, ".ready"), `${PREVIOUS_RELEASE.commit}\n`)
    renameSync(work, dir)
  } catch (e) {
    rmSync(work, { recursive: true, force: true })
    // another test process finished the same extraction first
    if (existsSync(join(dir, ".ready"))) return dir
    throw e
  }
  return dir
}

export interface PreviousBridge {
  mqttUrl: string
  httpUrl: string
  proc: ChildProcess
  /** SIGINT, as an operator stops it; resolves with its exit code. */
  stop(): Promise<number | null>
}

/** Starts the previous release's bridge (`npm run bridge` of that tree) on free ports. */
export async function startPreviousBridge(tree: string, env: Record<string, string>): Promise<PreviousBridge> {
  const proc = spawn(process.execPath, [TSX, "bridge/src/main.ts"], {
    cwd: tree,
    stdio: ["ignore", "pipe", "pipe"],
    env: {
      ...process.env,
      HTTP_PORT: "0",
      EMBEDDED_MQTT_PORT: "0",
      LOG_LEVEL: "warn",
      // no inactivity alarms raised while the test runs (they would depend on how long it takes)
      INACTIVITY_CHECK_MS: "3600000",
      ...env,
    },
  })
  let out = ""
  proc.stdout!.on("data", (b: Buffer) => (out += b.toString()))
  proc.stderr!.on("data", (b: Buffer) => (out += b.toString()))
  const exited = new Promise<number | null>((r) => proc.on("close", r))
  const started = /citymeter bridge: MQTT (\S+), store \w+, API (\S+)/
  const until = Date.now() + 60_000
  while (!started.test(out) && proc.exitCode === null && Date.now() < until)
    await new Promise((r) => setTimeout(r, 100))
  const m = started.exec(out)
  if (!m) {
    proc.kill("SIGKILL")
    throw new Error(`the ${PREVIOUS_RELEASE.version} bridge did not start:\n${out}`)
  }
  return {
    mqttUrl: m[1],
    httpUrl: m[2],
    proc,
    stop: () => {
      proc.kill("SIGINT")
      return exited
    },
  }
}
