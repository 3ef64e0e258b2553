// The DeviceScript WASM VM, hosted in this Node process.
//
// @devicescript/cli bundles the VM (emscripten, WASM inline) but exports only its CLI. We take the
// VM factory out of the pinned bundle (package.json pins the CLI exactly) so that each simulated
// meter gets its own VM instance, its own Jacdac bus and its own flash file — `devs run` processes
// would share the fixed devtools ports and one flash file. The extraction is checked at load time.
import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { installMeterSocket } from "./socket.js"

const require = createRequire(import.meta.url)

/** The subset of the emscripten module we use (names from the CLI's runtime/devicescript-vm). */
export interface DevsVm {
  /** Called by the VM for every Jacdac frame it sends. */
  sendPacket: (frame: Uint8Array) => void
  /** Delivers a Jacdac frame to the VM. */
  handlePacket(frame: Uint8Array): void
  devsStart(): void
  devsStop(): void
  devsIsRunning(): boolean
  devsSetDeviceId(id: string): void
  devsDeploy(bytecode: Uint8Array): number
  devsGcStress(on: boolean): void
  flashLoad: (() => Uint8Array) | null
  flashSave: ((data: Uint8Array) => void) | null
  panicHandler: (code: number) => void
  deployHandler: (code: number) => void
  dmesg: (line: string) => void
  log: (...args: unknown[]) => void
  error: (...args: unknown[]) => void
  /** Closes the VM's one TCP/TLS socket, if open (DeviceScript allows one at a time). */
  sockClose(): number
}

type VmFactory = (moduleArg?: Partial<DevsVm>) => Promise<DevsVm>

const START = "var require_devicescript_vm = __commonJS({"
const END = "\n// dap/built/devicescript-dap.cjs"

let factory: VmFactory | undefined

function loadFactory(): VmFactory {
  if (factory) return factory
  const bundlePath = require.resolve("@devicescript/cli/built/devicescript-cli.cjs")
  const text = readFileSync(bundlePath, "utf8")
  const start = text.indexOf(START)
  const end = text.indexOf(END, start)
  if (start < 0 || end < 0)
    throw new Error(
      `cannot find the DeviceScript VM in ${bundlePath}: the CLI version changed; pin @devicescript/cli to the version in package.json`,
    )
  // esbuild wraps each bundled CommonJS module in __commonJS; a minimal equivalent runs it once.
  const body = `
    const __commonJS = (cb) => { let mod; return () => { if (!mod) { mod = { exports: {} }; cb[Object.keys(cb)[0]](mod.exports, mod) } return mod.exports } };
    ${text.slice(start, end)}
    return require_devicescript_vm();`
  const f = new Function("require", "__filename", "__dirname", body) as (
    r: NodeJS.Require,
    f: string,
    d: string,
  ) => VmFactory
  factory = f(require, bundlePath, bundlePath.replace(/\/[^/]*$/, ""))
  if (typeof factory !== "function") throw new Error("DeviceScript VM factory not found in CLI bundle")
  return factory
}

/** Creates a fresh VM instance (each has its own WASM memory, socket and timers). */
export async function createVm(): Promise<DevsVm> {
  const vm = await loadFactory()({})
  vm.devsGcStress(false)
  installMeterSocket(vm) // 1 KB reads, a receive window, a bounded send queue: as on a board

  return vm
}
