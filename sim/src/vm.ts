// The DeviceScript WASM VM, hosted in this Node process (or worker thread).
//
// @devicescript/cli bundles the VM (emscripten, WASM inline) but exports only its CLI. We take the
// VM factory out of the pinned bundle (package.json pins the CLI exactly) so that each simulated
// meter gets its own VM instance, its own Jacdac bus and its own flash file — `devs run` processes
// would share the fixed devtools ports and one flash file. The extraction is checked at load time.
//
// Hundreds of VMs per machine: the WASM module is compiled once per thread and
// instantiated per meter, and the VM's main loop is run by the host here, on the VM's own timers:
//   - the CLI's loop calls the runtime every 10 ms whatever it waits for: jacdac-c's
//     jd_process_everything() caps the runtime's sleep at JD_MIN_MAX_SLEEP (10 ms), although the
//     DeviceScript scheduler asks for exactly the time to its next fiber wake-up, at most 100 ms
//     (runtime/devicescript/fibers.c devs_fiber_get_max_sleep). 100 idle passes a second per VM
//     were most of a simulated meter's CPU. The cap is raised to 100 ms in the WASM code below:
//     firmware timers fire when they are due, as before;
//   - what the runtime cannot know about wakes it at once: a Jacdac frame from the bus (as the
//     CLI did) and socket events (sim/src/socket.ts), which it used to see on the next 10 ms pass.
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
  /** Asks for a pass of the VM's main loop within `ms` (host scheduler, below). */
  wake(ms: number): void
}

/** The emscripten module members the host loop drives. */
interface VmLoop {
  HEAPU8: Uint8Array
  _malloc(n: number): number
  _free(p: number): void
  _jd_em_frame_received(ptr: number): number
  _jd_em_process(): number
  devsInit(): void
}

type VmFactory = (moduleArg?: Record<string, unknown>) => Promise<DevsVm>

const START = "var require_devicescript_vm = __commonJS({"
const END = "\n// dap/built/devicescript-dap.cjs"
const WASM_URI = /wasmBinaryFile = "data:application\/octet-stream;base64,([A-Za-z0-9+/=]+)"/

/**
 * CITYMETER_SIM_LOOP=cli runs VMs as the CLI does (a pass every 10 ms at most, unpatched WASM): the
 * baseline `npm run bench` measures the host loop against.
 */
const CLI_LOOP = process.env.CITYMETER_SIM_LOOP === "cli"

/** Microseconds the runtime sleeps at most between passes (the fiber scheduler's own bound). */
export const MAX_SLEEP_US = 100_000

let loaded: { factory: VmFactory; wasm: WebAssembly.Module } | undefined

function fail(what: string, bundlePath: string): never {
  throw new Error(
    `${what} in ${bundlePath}: the CLI version changed; pin @devicescript/cli to the version in package.json`,
  )
}

function loadFactory() {
  if (loaded) return loaded
  const bundlePath = require.resolve("@devicescript/cli/built/devicescript-cli.cjs")
  const text = readFileSync(bundlePath, "utf8")
  const start = text.indexOf(START)
  const end = text.indexOf(END, start)
  if (start < 0 || end < 0) fail("cannot find the DeviceScript VM", bundlePath)
  const source = text.slice(start, end)
  const uri = WASM_URI.exec(source)
  if (!uri) fail("cannot find the VM's WASM binary", bundlePath)
  const binary = new Uint8Array(Buffer.from(uri[1], "base64"))
  if (!CLI_LOOP) raiseSleepCap(binary, bundlePath)
  // esbuild wraps each bundled CommonJS module in __commonJS; a minimal equivalent runs it once.
  const body = `
    const __commonJS = (cb) => { let mod; return () => { if (!mod) { mod = { exports: {} }; cb[Object.keys(cb)[0]](mod.exports, mod) } return mod.exports } };
    ${source}
    return require_devicescript_vm();`
  const f = new Function("require", "__filename", "__dirname", body) as (
    r: NodeJS.Require,
    f: string,
    d: string,
  ) => VmFactory
  const factory = f(require, bundlePath, bundlePath.replace(/\/[^/]*$/, ""))
  if (typeof factory !== "function") throw new Error("DeviceScript VM factory not found in CLI bundle")
  loaded = { factory, wasm: new WebAssembly.Module(binary) }
  return loaded
}

/** Unsigned LEB128 reader over a WASM binary (WebAssembly core spec 5.2.2). */
function reader(b: Uint8Array, at: number) {
  const r = {
    p: at,
    u32() {
      let v = 0
      let shift = 0
      let x: number
      do {
        x = b[r.p++]
        v += (x & 0x7f) * 2 ** shift
        shift += 7
      } while (x & 0x80)
      return v
    },
    name() {
      const n = r.u32()
      const s = Buffer.from(b.subarray(r.p, r.p + n)).toString("utf8")
      r.p += n
      return s
    },
  }
  return r
}

/**
 * In jd_process_everything, `jd_max_sleep = JD_MIN_MAX_SLEEP` is `i32.const 10000` (signed LEB128
 * 90 CE 00); 100000 (A0 8D 06) has the same length, so the code is patched in place. The function
 * is found through the binary's name section; exactly one such constant must be in it.
 */
function raiseSleepCap(b: Uint8Array, bundlePath: string) {
  const r = reader(b, 8) // magic and version
  let importedFuncs = 0
  let codeAt = -1
  let target = -1
  while (r.p < b.length) {
    const id = b[r.p++]
    const size = r.u32()
    const next = r.p + size
    if (id === 2) {
      // import section: count the imported functions, which come first in the function index space
      for (let n = r.u32(); n > 0; n--) {
        r.name()
        r.name()
        const kind = b[r.p++]
        if (kind === 0) {
          r.u32()
          importedFuncs++
        } else if (kind === 1) {
          r.p++ // reftype
          if (b[r.p++] & 1) r.u32()
          r.u32()
        } else if (kind === 2) {
          if (b[r.p++] & 1) r.u32()
          r.u32()
        } else if (kind === 3) r.p += 2
        else fail(`unknown WASM import kind ${kind}`, bundlePath)
      }
    } else if (id === 10) codeAt = r.p
    else if (id === 0 && r.name() === "name") {
      while (r.p < next) {
        const sub = b[r.p++]
        const end = r.u32() + r.p
        if (sub === 1)
          for (let n = r.u32(); n > 0; n--) {
            const idx = r.u32()
            if (r.name() === "jd_process_everything") target = idx
          }
        r.p = end
      }
    }
    r.p = next
  }
  if (codeAt < 0 || target < importedFuncs) fail("cannot find jd_process_everything in the VM's WASM", bundlePath)
  r.p = codeAt
  const count = r.u32()
  for (let i = 0; i < count; i++) {
    const size = r.u32()
    if (i === target - importedFuncs) {
      const from = [0x41, 0x90, 0xce, 0x00] // i32.const 10000
      const to = [0x41, 0xa0, 0x8d, 0x06] // i32.const 100000
      const hits: number[] = []
      for (let k = r.p; k + 4 <= r.p + size; k++) if (from.every((x, j) => b[k + j] === x)) hits.push(k)
      if (hits.length !== 1)
        fail(`jd_process_everything has ${hits.length} JD_MIN_MAX_SLEEP constants, expected 1`, bundlePath)
      b.set(to, hits[0])
      return
    }
    r.p += size
  }
  fail("jd_process_everything has no code", bundlePath)
}

/** Runs the VM's main loop on its own timers; replaces the CLI's start/stop/packet entry points. */
function installLoop(vm: DevsVm) {
  const m = vm as unknown as VmLoop & DevsVm
  let running = false
  let timer: NodeJS.Timeout | undefined
  let due = Infinity
  /** While a pass runs: the soonest next pass asked for (what arrives during a pass, it handles). */
  let inPass: number | undefined
  const pass = () => {
    timer = undefined
    due = Infinity
    if (!running) return
    inPass = MAX_SLEEP_US / 1000
    let ms: number
    try {
      ms = m._jd_em_process() / 1000
    } catch (e) {
      inPass = undefined
      m.error(e)
      running = false
      return
    }
    ms = Math.min(ms, inPass)
    inPass = undefined
    schedule(ms)
  }
  const schedule = (ms: number) => {
    if (!running) return
    if (inPass !== undefined) {
      if (ms > 0) inPass = Math.min(inPass, ms)
      return
    }
    const at = performance.now() + ms
    if (timer && at >= due) return
    if (timer) clearTimeout(timer)
    due = at
    timer = setTimeout(pass, ms)
  }
  m.wake = schedule
  m.devsStart = () => {
    if (running) return
    m.devsInit()
    running = true
    schedule(10)
  }
  m.devsStop = () => {
    running = false
    if (timer) clearTimeout(timer)
    timer = undefined
  }
  m.devsIsRunning = () => running
  m.handlePacket = (frame) => {
    if (!running) return
    const ptr = m._malloc(frame.length)
    m.HEAPU8.set(frame, ptr)
    try {
      m._jd_em_frame_received(ptr)
    } finally {
      m._free(ptr)
    }
    schedule(0)
  }
}

/** Creates a fresh VM instance (each has its own WASM memory, socket and timers). */
export async function createVm(): Promise<DevsVm> {
  const { factory, wasm } = loadFactory()
  let failed: (e: unknown) => void = () => {}
  const instantiateFailed = new Promise<never>((_, reject) => (failed = reject))
  const vm = await Promise.race([
    factory({
      // emscripten's hook: instantiate the module compiled once instead of compiling it per VM
      instantiateWasm(
        imports: WebAssembly.Imports,
        receive: (instance: WebAssembly.Instance, module: WebAssembly.Module) => void,
      ) {
        WebAssembly.instantiate(wasm, imports).then((instance) => receive(instance, wasm), failed)
        return {}
      },
    }),
    instantiateFailed,
  ])
  vm.devsGcStress(false)
  if (CLI_LOOP) vm.wake = () => {}
  else installLoop(vm)
  installMeterSocket(vm, vm.wake) // 1 KB reads, a receive window, a bounded send queue: as on a board
  return vm
}
