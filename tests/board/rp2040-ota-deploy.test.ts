// A deploy of a different firmware to the real DeviceScript runtime on the emulated RP2040 (issue
// 23: "also run one deploy on the emulated RP2040 where its image allows"). The emulated board has
// no CYW43, so the WSSK link whose commands 0x94/0x95/0x96 carry a fleet update cannot run here;
// the DeviceScript Manager service over the USB Jacdac link reaches the same deploy code in the
// runtime (devsmgr.c devsmgr_deploy_start / devsmgr_deploy_write, the hash of devsmgr_get_hash),
// so the store, the flash writes and the program restart are the meter's own
// (testkit/rp2040/deploy.ts).
//
// v1 is the citymeter_picow build the board boots; v2 is the same target built as another version
// (testkit/firmware-variant.ts). The firmware does not log its version at start and the runtime's
// "* start:" line shows no @version for these builds, so which program runs is told by the
// runtime's own `DevS-SHA256:` line and its program_sha256 register (v2's bytes carry its version).
import { createHash } from "node:crypto"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { buildVariant, type Variant } from "../../testkit/firmware-variant.js"
import { Board, SETTINGS_STORE, speedLine, uniqueIdFor } from "../../testkit/rp2040/board.js"
import { bundledImage, type BundledImage } from "../../testkit/rp2040/bundle.js"
import {
  DEPLOY_CHUNK_BYTES,
  DEVICE_SCRIPT_MANAGER,
  deployBytecode,
  fnv1a,
  programHash,
  programSha256,
  programSize,
  rp2040DeployedHash,
  type DeployResult,
} from "../../testkit/rp2040/deploy.js"
import { findService, type JdService } from "../../testkit/rp2040/jacdac.js"

const BOARD = "citymeter_picow"
const V2 = "0.3.0-ota"
const CHIP = uniqueIdFor(23)
const CUT_CHIP = uniqueIdFor(24)
const CUT_AFTER_CHUNKS = 40
const NO_PROGRAM = "0".repeat(64)
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex")
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

let image: BundledImage
let v2: Variant
let board: Board
let mgr: JdService
const t0 = Date.now()
const figures: string[] = []

/** Runs until a log line from index `from` on matches `re`; returns it. */
async function newLogLine(b: Board, from: number, re: RegExp, maxMs: number): Promise<string> {
  let hit: string | undefined
  await b.runUntil(() => (hit = b.log.slice(from).find((l) => re.test(l))) !== undefined, maxMs)
  if (hit === undefined) throw new Error(`no log line matched ${re} within ${maxMs} ms emulated after line ${from}`)
  return hit
}

const bootOf = (line: string) => Number(/ boot (\d+) /.exec(line)?.[1])
const meterIdOf = (line: string) => /meter (m-[0-9a-f]+)/.exec(line)?.[1]

const describeDeploy = (what: string, r: DeployResult) =>
  `${what}: ${r.sent} of ${r.bytes} B in ${r.chunks} pipe packets of ≤ ${DEPLOY_CHUNK_BYTES} B` +
  `${r.closed ? " + close" : ""}, ${r.resends} resent, ${r.emulatedMs.toFixed(1)} ms emulated, ${(r.realMs / 1000).toFixed(2)} s real`

// the build and bundle wait their turn behind other bundles (a lock): a generous hook timeout
beforeAll(async () => {
  ;[image, v2] = await Promise.all([bundledImage(BOARD), buildVariant({ board: BOARD, version: V2 })])
  board = new Board({ uf2: image.uf2, uniqueId: CHIP })
}, 600_000)

afterAll(() => {
  for (const f of figures) console.log(`rp2040-ota-deploy: ${f}`)
  if (board) console.log(`rp2040-ota-deploy: first board ${speedLine(board)}`)
  console.log(`rp2040-ota-deploy: file wall time ${((Date.now() - t0) / 1000).toFixed(1)} s`)
})

describe("a deploy over the DeviceScript Manager service (the runtime's devsmgr deploy code)", () => {
  let v2Meter = ""

  test("v2 is another program: same target, another version, another sha256", () => {
    expect(v2.sha256).not.toBe(image.sha256)
    expect(v2.size % 32).toBe(0) // devsmgr_deploy_start refuses anything else
    expect(v2.bytes.includes(Buffer.from(V2))).toBe(true)
    expect(image.bytecode.includes(Buffer.from(V2))).toBe(false)
  })

  test("the booted program's program_sha256 is the build's sha256 (and program_hash its FNV-1a)", async () => {
    await board.waitForLog(/citymeter: board drivers started/, 4000)
    mgr = await findService(board, DEVICE_SCRIPT_MANAGER, 2000)
    expect(board.log.join("\n")).toContain(`DevS-SHA256: ${image.sha256}`)
    expect(await programSha256(board, mgr)).toBe(image.sha256)
    expect(sha256(image.bytecode)).toBe(image.sha256)
    expect(await programHash(board, mgr)).toBe(fnv1a(image.bytecode))
    expect(await programSize(board, mgr)).toBe(image.bytecode.length)
  })

  test("deploying v2: streamed through the pipe, written to the store, and the runtime starts it", async () => {
    const v1Meter = board.log.find((l) => /citymeter: meter m-/.test(l))!
    const from = board.log.length
    const ops = board.flashOps.length
    const r = await deployBytecode(board, mgr, v2.bytes)
    expect(r).toMatchObject({ bytes: v2.size, sent: v2.size, closed: true })
    expect(r.chunks).toBe(Math.ceil(v2.size / DEPLOY_CHUNK_BYTES))
    figures.push(describeDeploy("deploy v1 → v2", r))
    // every flash write of the deploy is in the settings/program store
    const written = board.flashOps.slice(ops)
    const store = {
      from: SETTINGS_STORE.address,
      to: SETTINGS_STORE.address + SETTINGS_STORE.pages * SETTINGS_STORE.pageBytes,
    }
    for (const op of written)
      expect(
        op.address >= store.from && op.address + op.length <= store.to,
        `${op.kind} 0x${op.address.toString(16)}`,
      ).toBe(true)
    const kinds = new Map<string, number>()
    for (const op of written) kinds.set(op.kind, (kinds.get(op.kind) ?? 0) + 1)
    figures.push(`deploy flash operations: ${JSON.stringify(Object.fromEntries(kinds))}`)
    const closedAt = board.emulatedMs

    // the runtime's deploy path, in its own words: stop, write, restart with v2's bytes
    const started = await newLogLine(board, from, new RegExp(`DevS-SHA256: ${v2.sha256}`), 2000)
    const log = board.log.slice(from).join("\n")
    expect(log).toContain(`mgr: deploy ${v2.size} b`)
    expect(log).toContain("* stop program")
    expect(log).toContain("mgr: program written")
    expect(log).not.toMatch(/! missing|! invalid pkt size/)
    const startMs = board.usb.logTimes[board.log.indexOf(started, from)] - closedAt
    v2Meter = await newLogLine(board, from, /citymeter: meter m-/, 3000)
    await newLogLine(board, from, /citymeter: board drivers started/, 3000)
    figures.push(
      `v2 started ${startMs.toFixed(1)} ms (emulated) after the pipe closed; its meter line ` +
        `${(board.usb.logTimes[board.log.indexOf(v2Meter, from)] - closedAt).toFixed(0)} ms after`,
    )
    expect(log + board.log.slice(from).join("\n")).toMatch(/\* start: citymeter firmware\/targets\/citymeter_picow/)
    expect(board.systemResetAtMs).toBeUndefined() // the same board config: a program restart, no chip reset
    expect(await programSha256(board, mgr)).toBe(v2.sha256)
    // program_hash (FNV-1a, u32) is hashed at close before the Pico's last flash page is synced:
    // it is the hash of v2 with its last 256 bytes as 0xff (program_sha256, hashed when read, is
    // right; the WSSK hash command uses the SHA-256 too)
    const hash = await programHash(board, mgr)
    expect(hash).not.toBe(fnv1a(v2.bytes))
    expect(hash).toBe(rp2040DeployedHash(v2.bytes))
    expect(await programSize(board, mgr)).toBe(v2.size)
    // the settings store survived the deploy: the same meter, its boot counter one up
    expect(meterIdOf(v2Meter)).toBe(meterIdOf(v1Meter))
    expect(bootOf(v2Meter)).toBe(bootOf(v1Meter) + 1)
  })

  test("after a power cycle (the flash kept) v2 still runs", async () => {
    const again = new Board({ flash: board.flashImage(), uniqueId: CHIP })
    const meter = await again.waitForLog(/citymeter: meter m-/, 4000)
    const log = again.log.join("\n")
    expect(log).toContain(`DevS-SHA256: ${v2.sha256}`)
    expect(log).not.toContain(`DevS-SHA256: ${image.sha256}`)
    expect(meterIdOf(meter)).toBe(meterIdOf(v2Meter))
    expect(bootOf(meter)).toBe(bootOf(v2Meter) + 1)
    const m = await findService(again, DEVICE_SCRIPT_MANAGER, 2000)
    expect(await programSha256(again, m)).toBe(v2.sha256)
    console.log(`rp2040-ota-deploy (power cycle): ${speedLine(again)}`)
  })
})

describe(`a power cut ${CUT_AFTER_CHUNKS} chunks into a deploy`, () => {
  let after: Board

  test("the next boot has no program: devsmgr writes the header's second magic only at the end", async () => {
    const cut = new Board({ uf2: image.uf2, uniqueId: CUT_CHIP })
    await cut.waitForLog(/\* start: citymeter/, 3000)
    const m = await findService(cut, DEVICE_SCRIPT_MANAGER, 2000)
    const holds = (flash: Uint8Array, bytes: Uint8Array) => Buffer.from(flash).indexOf(bytes) >= 0
    expect(holds(cut.flashImage(), image.bytecode)).toBe(true)
    let cutOp = -1
    const deploy = deployBytecode(cut, m, v2.bytes, {
      afterChunk: (i) => {
        // the cut lands half-way through the next flash program or erase
        if (i === CUT_AFTER_CHUNKS - 1) cut.cutPowerAt({ afterFlashOps: (cutOp = cut.flashOps.length), withinOp: 0.5 })
      },
    })
    await expect(deploy).rejects.toThrow(/power cut/)
    const op = cut.flashOps[cutOp]
    expect(op.cutAtFraction).toBe(0.5)
    figures.push(
      `power cut in flash op ${cutOp} (${op.kind} 0x${op.address.toString(16)}+${op.length}) after ${CUT_AFTER_CHUNKS} chunks ` +
        `(${CUT_AFTER_CHUNKS * DEPLOY_CHUNK_BYTES} B) at ${cut.emulatedMs.toFixed(0)} ms emulated`,
    )

    // v1 is gone too: the new "*prog" entry took the pages v1 had (jd_settings_prep_large frees
    // the old entry, then erases the first free run, which starts where v1 was)
    expect(holds(cut.flashImage(), image.bytecode)).toBe(false)
    after = new Board({ flash: cut.flashImage(), uniqueId: CUT_CHIP })
    const m2 = await findService(after, DEVICE_SCRIPT_MANAGER, 3000)
    // the runtime starts its built-in empty program (its sha256 is neither v1's nor v2's)
    const empty = await after.waitForLog(/DevS-SHA256: /, 3000)
    await after.runFor(300)
    const log = after.log.join("\n")
    expect(empty).not.toMatch(new RegExp(`${esc(image.sha256)}|${esc(v2.sha256)}`))
    expect(log).not.toMatch(/\* start: citymeter|citymeter:/)
    expect(log).toContain("fstor: mounted") // the store itself is intact
    expect(await programSha256(after, m2)).toBe(NO_PROGRAM)
    expect(await programHash(after, m2)).toBe(0)
    expect(await programSize(after, m2)).toBe(0)
    figures.push(`after the cut the runtime runs an empty program (${empty}); program_sha256 all zeros, program_size 0`)
  })

  test("a new deploy brings the board back: the runtime resets the chip for v2's board config, then runs v2", async () => {
    const m = await findService(after, DEVICE_SCRIPT_MANAGER, 500)
    const from = after.log.length
    const r = await deployBytecode(after, m, v2.bytes)
    expect(r.closed).toBe(true)
    figures.push(describeDeploy("re-deploy after the cut", r))
    await newLogLine(after, from, /mgr: program written/, 500)
    // devsmgr_sync_dcfg: the board booted with no program, so with no board config; v2 brings one,
    // and the runtime calls target_reset() (NVIC_SystemReset) to apply it
    await after.runUntil(() => after.systemResetAtMs !== undefined, 2000)
    expect(after.systemResetAtMs).toBeDefined()
    const written = after.usb.logTimes[after.log.findIndex((l, i) => i >= from && /mgr: program written/.test(l))]
    figures.push(
      `after the re-deploy the runtime reset the chip ${(after.systemResetAtMs! - written).toFixed(1)} ms (emulated) after "program written"`,
    )
    const next = new Board({ flash: after.flashImage(), uniqueId: CUT_CHIP })
    await next.waitForLog(/citymeter: meter m-/, 4000)
    expect(next.log.join("\n")).toContain(`DevS-SHA256: ${v2.sha256}`)
    const m2 = await findService(next, DEVICE_SCRIPT_MANAGER, 2000)
    expect(await programSha256(next, m2)).toBe(v2.sha256)
  })
})
