// One schema of the meter tunables (proto/tunables.json), and the config-time checks
// built on it: every copy — the firmware's generated module, the README table, the
// Config downlink's validation, the proto Config message, the CLI — agrees with the schema, and
// provision and the downlink route refuse what the meter could not count or keep, saying why.
import { readFileSync } from "node:fs"
import { join } from "node:path"
import protobuf from "protobufjs"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { buildApp } from "../bridge/src/api.js"
import { MAX_INTERVAL_S } from "../bridge/src/codec.js"
import { citymeter } from "../bridge/src/gen/citymeter.js"
import { createMetrics } from "../bridge/src/metrics.js"
import { CONFIG_BODY_PROPERTIES } from "../bridge/src/routes/downlinks.js"
import { openPglite } from "../bridge/src/store/engines.js"
import type { Store } from "../bridge/src/store/store.js"
import {
  GPIO_POLL_MS,
  STORAGE,
  TUNABLES,
  TUNABLE_BY_NAME,
  boardBankBytes,
  defaults,
  entryBytes,
  maxBatchForSlot,
  maxPulseHz,
  pulseLimitErrors,
  queueCapacity,
  queueFootprintError,
  readmeTable,
  repoBoardBanks,
  tunableErrors,
  worstFrameBytes,
} from "../bridge/src/tunables.js"
import { buildSettings, TUNABLE_KEYS, type ProvisionInput } from "../cli/provision.js"
import { genFirmwareTunables, readmeWithTable } from "../scripts/gen-tunables.js"
import { paths } from "../sim/src/paths.js"

const read = (f: string) => readFileSync(join(paths.root, f), "utf8")

describe("every copy of the tunables agrees with proto/tunables.json", () => {
  test("keys are unique DeviceScript settings keys (at most 13 characters) and defaults lie within bounds", () => {
    expect(new Set(TUNABLES.map((t) => t.key)).size).toBe(TUNABLES.length)
    for (const t of TUNABLES) {
      expect(t.key, t.key).toMatch(/^[A-Z][A-Z0-9_]{0,12}$/)
      expect(t.min <= t.default && t.default <= t.max, t.key).toBe(true)
      expect(t.max, t.key).toBeLessThanOrEqual(0xffffffff) // proto uint32
      expect(t.unit && t.meaning, t.key).toBeTruthy()
    }
  })

  test("each tunable maps to a uint32 field of the proto Config message, and each Config field but the key is a tunable", () => {
    const root = protobuf.loadSync(join(paths.root, "proto/citymeter/v1/citymeter.proto"))
    const config = root.lookupType("citymeter.v1.Config")
    for (const t of TUNABLES) {
      const f = config.fields[t.name]
      expect(f, `${t.key} → Config.${t.field}`).toBeDefined()
      expect(f.type, t.field).toBe("uint32")
      expect(f.name).toBe(t.name)
    }
    const mapped = new Set<string>(TUNABLES.map((t) => t.name))
    expect(config.fieldsArray.filter((f) => !mapped.has(f.name)).map((f) => f.name)).toEqual(["sealKey"])
  })

  test("the firmware's generated copy is current (npm run gen) and config.ts holds no copy of its own", () => {
    expect(read("firmware/gen/tunables.ts")).toBe(genFirmwareTunables())
    const config = read("firmware/config.ts")
    for (const t of TUNABLES)
      expect(config, `${t.key} written in firmware/config.ts`).not.toMatch(new RegExp(`"${t.key}"\\s*,\\s*def`))
    expect(config).toContain('from "./gen/tunables"')
    expect(read("firmware/store.ts")).toContain('from "./gen/tunables"')
  })

  test("the README table is the schema's (npm run gen writes it)", () => {
    const readme = read("README.md")
    expect(readmeWithTable(readme)).toBe(readme)
    for (const t of TUNABLES)
      expect(readmeTable()).toContain(`| \`${t.key}\` | \`${t.field}\` | ${t.default} | ${t.min}..${t.max} |`)
  })

  test("the Config downlink accepts each tunable within the schema's bounds (least 1: zero means unchanged)", () => {
    expect(Object.keys(CONFIG_BODY_PROPERTIES).sort()).toEqual(TUNABLES.map((t) => t.name).sort())
    for (const t of TUNABLES) {
      const p = CONFIG_BODY_PROPERTIES[t.name] as { minimum: number; maximum: number }
      expect([p.minimum, p.maximum], t.key).toEqual([Math.max(1, t.min), t.max])
    }
  })

  test("the CLI takes every tunable (--interval, --batch, --set) with the schema's bounds", () => {
    const keys = [...TUNABLE_KEYS.keys(), "INTERVAL_S", "BATCH"].sort()
    expect(keys).toEqual(TUNABLES.map((t) => t.key).sort())
    for (const t of TUNABLE_KEYS.values()) {
      const input = { ...provisionInput, set: [`${t.key}=${t.max + 1}`] }
      expect(() => buildSettings(input), t.key).toThrow(`${t.key} must be an integer in ${t.min}..${t.max}`)
    }
    expect(() => buildSettings({ ...provisionInput, batch: TUNABLE_BY_NAME.batch.max + 1 })).toThrow(
      `batch must be an integer in 1..${TUNABLE_BY_NAME.batch.max}`,
    )
  })

  test("the uplink codec's interval bound is the schema's", () => {
    expect(MAX_INTERVAL_S).toBe(TUNABLE_BY_NAME.intervalS.max)
  })
})

const provisionInput: ProvisionInput = {
  meterId: "tun-001",
  board: "citymeter_picow",
  broker: "mqtt://127.0.0.1:1883",
  intervalS: 900,
  batch: 4,
}

describe("pulse inputs: what the 100 ms GPIO polling cannot count is refused", () => {
  test("the defaults are a utility reed meter (1 pulse/L) and an S0 meter (1000 imp/kWh), and they count", () => {
    const d = defaults()
    expect([d.pulsesPerL, d.impPerKwh]).toEqual([1, 1000])
    expect(pulseLimitErrors(d)).toEqual([])
    expect(maxPulseHz(GPIO_POLL_MS)).toBe(5)
  })

  test("the limit is max flow x pulses per litre <= 5 pulses/s, stricter for longer pulses", () => {
    const at = (pulsesPerL: number, maxFlowLmin: number, pulseMs = 100) =>
      pulseLimitErrors({ ...defaults(), pulsesPerL, maxFlowLmin, pulseMs })
    expect(at(1, 300)).toEqual([])
    expect(at(1, 301)[0]).toMatch(/PULSES_PER_L=1 at MAX_FLOW_LMIN=301 is 5 pulses\/s.*polled every 100 ms/)
    expect(at(10, 30)).toEqual([])
    expect(at(10, 31)).toHaveLength(1)
    // 150 ms pulses: one poll inside each pulse and each gap is 250 ms, 4 pulses/s
    expect(at(1, 240, 150)).toEqual([])
    expect(at(1, 241, 150)).toHaveLength(1)
    expect(at(1, 50, 30)[0]).toMatch(/PULSE_MS=30: .*shorter than 100 ms is missed/)
    // a 450 pulses/L hall sensor is uncountable above 0.67 L/min
    expect(at(450, 30)[0]).toMatch(/is 225 pulses\/s.*max 0\.7 L\/min/)
    const s0 = (impPerKwh: number, maxPowerW: number) => pulseLimitErrors({ ...defaults(), impPerKwh, maxPowerW })
    expect(s0(1000, 18000)).toEqual([])
    expect(s0(1000, 18001)[0]).toMatch(/IMP_PER_KWH=1000 at MAX_POWER_W=18001.*max 18000 W/)
  })

  test("provision refuses a constant the stated maximum flow would push past the limit, and says why", () => {
    expect(() => buildSettings({ ...provisionInput, set: ["PULSES_PER_L=450"] })).toThrow(
      /PULSES_PER_L=450 at MAX_FLOW_LMIN=50 is 375 pulses\/s; GPIO inputs are polled every 100 ms/,
    )
    expect(() => buildSettings({ ...provisionInput, set: ["IMP_PER_KWH=10000"] })).toThrow(/IMP_PER_KWH=10000/)
    const ok = buildSettings({ ...provisionInput, set: ["PULSES_PER_L=10", "MAX_FLOW_LMIN=30"] })
    expect(ok.defaults).toMatchObject({ PULSES_PER_L: 10, MAX_FLOW_LMIN: 30 })
  })
})

describe("storage: the flash queue fits each board's settings bank and every frame fits a slot", () => {
  test("BATCH's bound is the largest batch whose worst-case sealed frame fits a slot", () => {
    const max = TUNABLE_BY_NAME.batch.max
    expect(maxBatchForSlot()).toBe(max)
    expect(worstFrameBytes(max)).toBeLessThanOrEqual(STORAGE.maxFrameBytes)
    expect(worstFrameBytes(max + 1)).toBeGreaterThan(STORAGE.maxFrameBytes)
    // sealing costs the 8-byte tag and the slot's kind byte, minus the readings field's own header
    expect(worstFrameBytes(max)).toBeGreaterThan(worstFrameBytes(max, false))
    expect(tunableErrors({ ...defaults(), batch: max + 1 }).join()).toMatch(/BATCH must be an integer in 1\.\.4/)
  })

  test("the worst-case frame is an upper bound of the firmware's frames as the codec encodes them", () => {
    const batch = TUNABLE_BY_NAME.batch.max
    const w = STORAGE.frameWorstCase
    const a = (v: number) => Array<number>(batch).fill(v)
    const real = citymeter.v1.Uplink.encode({
      boot: 2 ** 28 - 1,
      seq: 123456,
      readings: {
        startS: 1_790_000_000,
        timeSynced: true,
        intervalS: 900,
        water: { totalMl: 2 ** 40, volumeMl: a(w.volumeMl - 1), reverseMl: a(1) },
        electricity: {
          totalWh: 2 ** 40,
          energyWh: a(w.energyWh),
          powerW: a(w.powerW),
          voltageDeltaDv: a(w.voltageStepDv),
        },
        pressure: { avgPa: a(w.pressurePa), belowAvgPa: a(w.pressurePa), aboveAvgPa: a(w.pressurePa) },
      },
    }).finish().length
    expect(real + 1 + 8).toBeLessThanOrEqual(worstFrameBytes(batch))
  })

  test("each board's bank holds the queue and every other setting; a smaller bank is refused with the reason", () => {
    const banks = repoBoardBanks()
    expect(banks.map((b) => b.bankBytes).sort((a, b) => a - b)).toEqual([8192, 16384, 16384])
    for (const { board, bankBytes } of banks) {
      expect(queueFootprintError(board, bankBytes), board).toBeUndefined()
      expect(queueCapacity(bankBytes), board).toBeGreaterThanOrEqual(STORAGE.queueSlots)
      expect(tunableErrors(defaults(), board), board).toEqual([])
    }
    expect(queueCapacity(boardBankBytes("citymeter_picow"))).toBe(29)
    // 65, not 66: the calibrations P_CAL and ADE_CAL (issue 20) take 136 B of the other settings
    expect(queueCapacity(boardBankBytes("citymeter_esp32c3"))).toBe(65)
    const tooSmall = STORAGE.queueSlots * entryBytes(STORAGE.maxFrameBytes)
    expect(queueFootprintError("tiny", tooSmall)).toMatch(/over the \d+ B settings bank of tiny.*fail silently/)
  })
})

describe("the Config downlink route refuses what the meter would refuse", () => {
  let store: Store
  const sent: { meterId: string; payload: Uint8Array }[] = []
  let app: ReturnType<typeof buildApp>
  const auth = { authorization: "Bearer tun-token" }
  const post = (meterId: string, payload: object) =>
    app.inject({ method: "POST", url: `/meters/${meterId}/config`, payload, headers: auth })

  beforeAll(async () => {
    store = await openPglite(undefined)
    await store.registerMeter("tun-pico", new Date())
    await store.recordBirth(
      "tun-pico",
      { firmware: "fw", board: "citymeter_picow", boot: 1, seq: 0, intervalS: 900, batch: 4, uptimeEpochMs: 0 },
      new Date(),
    )
    app = buildApp({
      store,
      metrics: createMetrics(),
      apiToken: "tun-token",
      downlink: async (meterId, _kind, payload) => {
        sent.push({ meterId, payload })
      },
    })
    await app.ready()
  }, 180_000) // PGlite's start took over 60 s with the CLI suite running beside it on 2 cores
  afterAll(async () => {
    await app?.close()
    await store?.close()
  })

  test("pulses past the polling limit: 422 with the reason; nothing is sent", async () => {
    const res = await post("tun-pico", { pulsesPerL: 10 })
    expect(res.statusCode).toBe(422)
    expect(res.json().error).toBe("CM_ERR_CONFIG_REFUSED")
    expect(res.json().message).toMatch(
      /PULSES_PER_L=10 at MAX_FLOW_LMIN=50 is 8\.3 pulses\/s.*checked with the defaults of/,
    )
    expect(sent).toHaveLength(0)
  })

  test("a BATCH past the flash slot is a 400; within the limits the Config reaches the meter", async () => {
    const big = await post("tun-pico", { batch: TUNABLE_BY_NAME.batch.max + 1 })
    expect(big.statusCode).toBe(400)
    expect(big.json().message).toMatch(/batch must be <= 4/)
    const ok = await post("tun-pico", { pulsesPerL: 10, maxFlowLmin: 30, batch: 2 })
    expect(ok.statusCode, ok.body).toBe(202)
    expect(sent).toHaveLength(1)
    const d = citymeter.v1.Downlink.decode(sent[0].payload)
    expect(d.config).toMatchObject({ pulsesPerL: 10, maxFlowLmin: 30, batch: 2 })
  })
})
