// Issue 23: a fleet update over the air with a DIFFERENT program. The real Pico W build runs in the
// simulator's VM as a board does (programFrom "flash": a power cycle runs what was deployed last).
// The bridge opens an update window (POST /meters/:id/update-window), the runtime links to the
// bridge's WSSK endpoint, and the endpoint deploys another build of the firmware (testkit
// firmware-variant.ts) through the runtime's deploy path (devsmgr.c devsmgr_deploy_start/_write).
// The new program's Birth names its version in the registry. Also: a power cut mid-transfer, a
// release that panics at start, and the frames made off MQTT, stored once.
import { randomBytes } from "node:crypto"
import { readFileSync } from "node:fs"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { connectionString } from "../../bridge/src/wssk/protocol.js"
import { DEFAULT_BOARD, SimMeter } from "../../sim/src/meter.js"
import { paths } from "../../sim/src/paths.js"
import { fstorValue, readFstor } from "../../sim/src/fstor.js"
import { storedProgram } from "../../sim/src/program.js"
import { buildVariant, type Variant } from "../../testkit/firmware-variant.js"
import { compare } from "../fault-util.js"
import { apiReadings, startStack, uid, waitFor, type TestStack } from "../helpers.js"

const OPS = "ops-token-ota"
const BOARD = DEFAULT_BOARD // citymeter_picow
const WINDOW_S = 60
/** Generous: two cores, other suites beside this one. */
const BOOT_MS = 60_000

const fw = (version: string) => `citymeter-fw ${version}`
const v1Version = /VERSION = "([^"]+)"/.exec(readFileSync(`${paths.root}/firmware/gen/version.ts`, "utf8"))![1]

describe("a fleet update over the air, through the runtime's deploy path", () => {
  const meterId = uid("ota")
  const sealKey = randomBytes(32)
  const linkKey = randomBytes(32)
  /** Firmware and VM lines with the time they came (performance.now()). */
  const log: { at: number; line: string }[] = []
  const deploys: string[] = []
  let stack: TestStack
  let meter: SimMeter
  let v1: Variant, v2: Variant, v3: Variant

  const ops = { authorization: `Bearer ${OPS}` }
  const since = (t: number, re: RegExp) => log.filter((l) => l.at > t && re.test(l.line))
  const row = async () => (await stack.store.getMeter(meterId))!
  const wssk = () => stack.wssk!

  /** The boot number of the first program start after `t`. */
  const bootAfter = async (t: number) => {
    const re = /citymeter: meter \S+ boot (\d+)/
    await waitFor("a program's boot", async () => since(t, re).length > 0, BOOT_MS)
    return Number(re.exec(since(t, re)[0].line)![1])
  }
  /**
   * Waits for the Birth of the program that booted after `t` and asserts its version in the
   * registry, then for a stored frame of that boot: the program runs, not only says hello.
   */
  const bornAs = async (t: number, firmware: string) => {
    const boot = await bootAfter(t)
    await waitFor(`the Birth of boot ${boot}`, async () => (await row()).boot === boot, BOOT_MS)
    expect((await row()).firmware).toBe(firmware)
    const stored = async () => (await apiReadings(stack, meterId)).some((r) => r.boot === boot)
    await waitFor(`a stored frame of boot ${boot}`, stored, BOOT_MS)
    return boot
  }
  /** Opens an update window through the API and waits for the meter's link. */
  const openWindow = async () => {
    const conn = connectionString(wssk().url, meterId, linkKey)
    const res = await stack.app.inject({
      method: "POST",
      url: `/meters/${meterId}/update-window`,
      headers: ops,
      payload: { conn, windowS: WINDOW_S },
    })
    expect(res.statusCode).toBe(202)
    await waitFor("the meter's link", async () => wssk().isUp(meterId), 30_000, 20)
  }
  /**
   * Deploys `v` and measures it. The runtime restarts the program at 0x96; a new program that
   * boots disarms the link, which may close before the re-check (0x93) is answered: then the
   * write is confirmed by the Birth instead (firmware/update-window.ts says why).
   */
  const deploy = async (v: Variant, onProgress?: (written: number) => void) => {
    const t0 = performance.now()
    let chunks = 0
    let recheck = "0x93 matched"
    try {
      await wssk().deploy(meterId, v.bytes, (n) => {
        chunks++
        onProgress?.(n)
      })
    } catch (e) {
      if (chunks * 224 < v.size || !/closed before 0x93/.test((e as Error).message)) throw e
      recheck = "link closed by the new program before 0x93"
    }
    const ms = performance.now() - t0
    // sent: 0x94 (u32 size), the 0x95 chunks, 0x96, 0x93; each a command byte, a 4-byte CCM tag
    // and a WebSocket header of 2 bytes (4 from 126 bytes on)
    const msg = (payload: number) => 1 + payload + 4 + (1 + payload + 4 < 126 ? 2 : 4)
    let wire = msg(4) + msg(0) + msg(0)
    for (let off = 0; off < v.size; off += 224) wire += msg(Math.min(224, v.size - off))
    deploys.push(`${v.version}: ${v.size} B in ${chunks} chunks, ${Math.round(ms)} ms, ~${wire} B sent; ${recheck}`)
    return { ms, chunks }
  }

  beforeAll(async () => {
    // v1 is the board build the meter starts with; buildVariant of its own version is the same bytes
    const t0 = performance.now()
    ;[v1, v2, v3] = await Promise.all([
      buildVariant({ board: BOARD, version: v1Version }),
      buildVariant({ board: BOARD, version: "9.0.0-ota" }),
      buildVariant({ board: BOARD, version: "9.1.0-broken", panicAtStart: true }),
    ])
    console.log(
      `variants: ${[v1, v2, v3].map((v) => `${v.version} ${v.size} B (${v.buildMs ? `built in ${v.buildMs} ms` : "cached"})`).join(", ")}; ` +
        `${Math.round(performance.now() - t0)} ms in all`,
    )
    expect(v1.bytes.equals(readFileSync(`${paths.root}/.devicescript/boards/${BOARD}.devs`))).toBe(true)
    for (const v of [v1, v2, v3]) expect(v.size % 32).toBe(0) // devsmgr_deploy_start takes nothing else

    stack = await startStack("embedded", {
      apiTokens: { ops: OPS },
      wssk: { port: 0, host: "127.0.0.1", handshakeMs: 5000 },
    })
    await stack.store.registerMeter(meterId, new Date(), { policy: "sealed", key: sealKey })
    const put = await stack.app.inject({
      method: "PUT",
      url: `/meters/${meterId}/link-key`,
      headers: ops,
      payload: { key: linkKey.toString("hex") },
    })
    expect(put.statusCode).toBe(200)
    meter = new SimMeter({
      meterId,
      board: BOARD,
      programFrom: "flash",
      settings: {
        MQTT_HOST: "127.0.0.1",
        MQTT_PORT: Number(new URL(stack.mqttUrl).port),
        // a frame every 4 s: a 60 s window's frames fit the queue (firmware windowRefusal)
        INTERVAL_S: 2,
        BATCH: 2,
        SEAL_KEY: sealKey.toString("hex"),
      },
      log: (line) => log.push({ at: performance.now(), line }),
    })
    meter.setElectricity({ energyWh: 100, powerW: 400, voltageDv: 2300 })
    meter.setPressure(300_000)
    await meter.start()
    meter.setWaterFlow(6000)
  }, 180_000)

  afterAll(async () => {
    await meter?.stop()
    await stack?.stop()
    if (deploys.length) console.log(`OTA deploys:\n  ${deploys.join("\n  ")}`)
  })

  test("a: v1 → v2 over the air; v2's Birth names v2, and a power cycle still runs v2", async () => {
    await bornAs(0, fw(v1.version))
    expect(storedProgram(meter.flashImage)?.sha256).toBe(v1.sha256)
    await openWindow()
    expect((await wssk().hash(meterId)).toString("hex")).toBe(v1.sha256)
    // a frame made off MQTT, from the flash queue later (d)
    const up = performance.now()
    await waitFor("a frame in the window", async () => since(up, /citymeter: frame boot=/).length > 0, 30_000)

    const t = performance.now()
    await deploy(v2)
    await bornAs(t, fw(v2.version))
    expect(since(t, /mgr: program written/).length).toBe(1)
    expect(storedProgram(meter.flashImage)).toEqual({ size: v2.size, complete: true, sha256: v2.sha256 })

    // power cycle: the VM runs the program its flash holds; the host deploys nothing
    await meter.stop()
    const t2 = performance.now()
    await meter.start()
    await bornAs(t2, fw(v2.version))
    expect(since(t2, /mgr: deploy/).length).toBe(0)
    expect(storedProgram(meter.flashImage)?.sha256).toBe(v2.sha256)
  }, 240_000)

  test("b: a power cut mid-transfer leaves no program to run and the link armed; the deploy is done again", async () => {
    await openWindow()
    const cutAfter = 40 // 0x95 chunks
    let cut: Promise<void> | undefined
    const tCut = performance.now()
    await expect(
      wssk().deploy(meterId, v2.bytes, (n) => {
        if (n >= cutAfter * 224 && !cut) cut = meter.stop()
      }),
    ).rejects.toThrow(/closed|link/)
    await cut
    // the runtime wrote the record's header at 0x94 (magic0, size) and syncs the flash only then and
    // at 0x96 (devsmgr.c; jd_fstor.c jd_settings_write_large does not sync): no magic1, no program
    const left = storedProgram(meter.flashImage)
    expect(left).toEqual({ size: v2.size, complete: false, sha256: undefined })
    // the VM saves its flash only when the runtime syncs (runtime/posix/flash.c flash_sync): the
    // chunks are not in it. A board's flash keeps them, which changes nothing without magic1.
    const bank = readFstor(meter.flashImage)!
    const record = fstorValue(meter.flashImage, bank, "*prog")!
    const written = record.subarray(128, 128 + cutAfter * 224).filter((x) => x !== 0xff).length
    console.log(`the cut left *prog: ${left!.size} B announced, no magic1, ${written} B of the chunks saved`)

    const t = performance.now()
    await meter.start()
    // the string the window stored brings the link back at boot (wssk_health.c wsskhealth_init)
    await waitFor("the link after the cut", async () => wssk().isUp(meterId), 30_000, 20)
    const linkMs = performance.now() - t
    const hash = await wssk().hash(meterId)
    await new Promise((r) => setTimeout(r, 3000))
    const empty = { hash: hash.toString("hex"), boots: since(t, /citymeter: meter \S+ boot/).length }
    console.log(
      `after the cut: link up ${Math.round(linkMs)} ms after start(); 0x93 ${empty.hash.slice(0, 16)}…; ` +
        `${empty.boots} program boots in 3 s`,
    )
    expect(empty.boots).toBe(0)
    expect(hash.equals(Buffer.alloc(32))).toBe(true) // devsmgr_get_hash: no valid header → zeros
    expect(storedProgram(meter.flashImage)?.complete).toBe(false)

    const t2 = performance.now()
    await deploy(v2)
    await bornAs(t2, fw(v2.version))
    expect(storedProgram(meter.flashImage)?.sha256).toBe(v2.sha256)
    console.log(
      `cut after ${cutAfter} chunks; back on v2 ${Math.round(performance.now() - tCut)} ms after the cut began`,
    )
  }, 240_000)

  test("c: a release that panics at start keeps the link; 0x93 answers it; v1 deployed again runs", async () => {
    await openWindow()
    const t = performance.now()
    await deploy(v3)
    const link = wssk().link(meterId)
    expect(link).toBeDefined()
    // the runtime restarts a panicking program 5 s after its panic (devsmgr.c devsmgr_process)
    const panics = () => since(t, /message: citymeter: panic at start/).map((l) => l.at)
    await waitFor("three panics", async () => panics().length >= 3, 60_000)
    const at = panics()
    const gaps = at.slice(1).map((p, i) => Math.round(p - at[i]))
    console.log(`v3 panics at start: ${at.length}, ${gaps.join(", ")} ms apart; the link stayed up`)
    expect(since(t, /! Unhandled exception/).length).toBeGreaterThanOrEqual(3)
    expect(since(t, /citymeter: meter \S+ boot/).length).toBe(0)
    expect(wssk().link(meterId)).toBe(link) // the same link, up all along
    expect((await wssk().hash(meterId)).toString("hex")).toBe(v3.sha256)

    const t2 = performance.now()
    await deploy(v1)
    await bornAs(t2, fw(v1.version))
    expect(storedProgram(meter.flashImage)?.sha256).toBe(v1.sha256)
  }, 240_000)

  test("d: every frame, those made off MQTT among them, is stored once", async () => {
    const gen = new Map<string, number>()
    for (const { line } of log) {
      const m = /frame boot=(\d+) seq=(\d+) n=(\d+)/.exec(line)
      if (m) gen.set(`${m[1]}/${m[2]}`, Number(m[3]))
    }
    await waitFor(
      "the queue caught up",
      async () => compare(meter, await apiReadings(stack, meterId), gen).missing === 0,
      60_000,
    )
    const c = compare(meter, await apiReadings(stack, meterId), gen)
    expect(c).toEqual({ generated: c.stored, stored: c.stored, duplicates: 0, missing: 0 })
    // frames made between leaving MQTT and the next connect
    const offMqtt: string[] = []
    let off = false
    for (const { line } of log) {
      if (/leaving MQTT/.test(line)) off = true
      else if (/citymeter: connected/.test(line)) off = false
      const m = /frame boot=(\d+) seq=(\d+)/.exec(line)
      if (off && m) offMqtt.push(`${m[1]}/${m[2]}`)
    }
    expect(offMqtt.length).toBeGreaterThanOrEqual(1)
    const boots = new Set([...gen.keys()].map((k) => k.split("/")[0])).size
    console.log(`frames: ${gen.size} made in ${boots} boots, ${offMqtt.length} of them off MQTT; all stored once`)
  }, 120_000)
})
