// One schema of the meter tunables (proto/tunables.json), and the config-time checks
// built on it: every copy — the firmware's generated module, the README table, the
// Config downlink's validation, the proto Config message, the CLI — agrees with the schema, and
// provision and the downlink route refuse what the meter could not count or keep, saying why.
import { readFileSync } from "node:fs"
import { join } from "node:path"
import protobuf from "protobufjs"
import { describe, expect, test } from "vitest"
import { MAX_INTERVAL_S } from "../../bridge/src/codec/frames.js"
import { citymeter } from "../../bridge/src/gen/citymeter.js"
import { CONFIG_BODY_PROPERTIES } from "../../bridge/src/routes/downlinks.js"
import { TUNABLES, TUNABLE_BY_NAME, defaults } from "../../bridge/src/tunables/schema.js"
import { PULSE_SAMPLE_MS, maxPulseHz, pulseLimitErrors } from "../../bridge/src/tunables/pulse-limits.js"
import {
  STORAGE,
  boardBankBytes,
  entryBytes,
  maxBatchForSlot,
  queueCapacity,
  queueFootprintError,
  storageBudget,
  SLOT_BYTES,
  budgetedKeys,
  repoBoardBanks,
  worstFrameBytes,
} from "../../bridge/src/tunables/storage-budget.js"
import { readmeTable, tunableErrors } from "../../bridge/src/tunables.js"
import { buildSettings, TUNABLE_KEYS, type ProvisionInput } from "../../cli/provision.js"
import { genFirmwareTunables, readmeWithTable } from "../../scripts/gen-tunables.js"
import { paths } from "../../sim/src/paths.js"

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

  test("the ADE7953 probe period (ADE_RETRY_S) is provisioned within the firmware's bounds", () => {
    expect(buildSettings({ ...provisionInput, adeRetryS: 8 }).defaults.ADE_RETRY_S).toBe(8)
    expect(buildSettings(provisionInput).defaults.ADE_RETRY_S).toBeUndefined() // the firmware's 30 s
    for (const bad of [0, 3601, 2.5])
      expect(() => buildSettings({ ...provisionInput, adeRetryS: bad }), String(bad)).toThrow(
        "ade-retry must be an integer in 1..3600",
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

describe("pulse inputs: what a board's pulse inputs cannot count is refused (issue 20)", () => {
  test("the defaults are a utility reed meter (1 pulse/L) and an S0 meter (1000 imp/kWh), and they count", () => {
    const d = defaults()
    expect([d.pulsesPerL, d.impPerKwh]).toEqual([1, 1000])
    expect(pulseLimitErrors(d)).toEqual([])
    // 9 ms C sampling; pulses and gaps of 20 ms: 100 ms pulses up to 8.3/s, 30 ms S0 up to 20/s
    expect(PULSE_SAMPLE_MS).toBe(9)
    expect(maxPulseHz(100, "citymeter_picow")).toBeCloseTo(1000 / 120, 9)
    expect(maxPulseHz(30, "citymeter_picow")).toBe(20)
    expect(maxPulseHz(20, "citymeter_esp32c3")).toBe(25)
    // an unknown board gets the strictest figures
    expect(maxPulseHz(30, "no_such_board")).toBe(20)
  })

  test("the limit is max flow x pulses per litre <= the board's rate, stricter for longer pulses", () => {
    const at = (pulsesPerL: number, maxFlowLmin: number, pulseMs = 100) =>
      pulseLimitErrors({ ...defaults(), pulsesPerL, maxFlowLmin, pulseMs }, "citymeter_picow")
    expect(at(1, 500)).toEqual([])
    expect(at(1, 501)[0]).toMatch(
      /PULSES_PER_L=1 at MAX_FLOW_LMIN=501 is 8\.4 pulses\/s; citymeter_picow counts at most 8\.3/,
    )
    expect(at(30, 40, 30)).toEqual([])
    expect(at(30, 41, 30)).toHaveLength(1)
    expect(at(1, 50, 19)[0]).toMatch(/PULSE_MS=19: citymeter_picow counts pulses of at least 20 ms/)
    // a 450 pulses/L hall sensor (pulses of 20 ms) is uncountable above 3.3 L/min
    expect(at(450, 30, 20)[0]).toMatch(/is 225 pulses\/s.*max 3\.3 L\/min/)
    const s0 = (impPerKwh: number, maxPowerW: number) =>
      pulseLimitErrors({ ...defaults(), impPerKwh, maxPowerW, pulseMs: 30 }, "citymeter_esp32s3")
    expect(s0(1000, 72000)).toEqual([])
    expect(s0(1000, 72001)[0]).toMatch(/IMP_PER_KWH=1000 at MAX_POWER_W=72001.*max 72000 W/)
  })

  test("provision refuses a constant the stated maximum flow would push past the limit, and says why", () => {
    expect(() => buildSettings({ ...provisionInput, set: ["PULSES_PER_L=450"] })).toThrow(
      /PULSES_PER_L=450 at MAX_FLOW_LMIN=50 is 375 pulses\/s; citymeter_picow counts at most/,
    )
    expect(() => buildSettings({ ...provisionInput, set: ["IMP_PER_KWH=10000"] })).toThrow(/IMP_PER_KWH=10000/)
    expect(() => buildSettings({ ...provisionInput, set: ["PULSE_MS=10"] })).toThrow(/PULSE_MS=10/)
    const ok = buildSettings({ ...provisionInput, set: ["PULSE_MS=30", "IMP_PER_KWH=1000", "MAX_POWER_W=72000"] })
    expect(ok.defaults).toMatchObject({ PULSE_MS: 30, MAX_POWER_W: 72000 })
  })
})

describe("storage: the flash queue fits each board's settings bank and every frame fits a slot", () => {
  test("BATCH's bound is the largest batch whose worst-case sealed frame fits a slot", () => {
    const max = TUNABLE_BY_NAME.batch.max
    expect(maxBatchForSlot()).toBe(max)
    expect(worstFrameBytes(max)).toBeLessThanOrEqual(STORAGE.maxFrameBytes)
    expect(worstFrameBytes(max + 1)).toBeGreaterThan(STORAGE.maxFrameBytes)
    // sealing costs the 8-byte tag, minus the readings field's own header (the slot's state says sealed)
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
    expect(real + 8).toBeLessThanOrEqual(worstFrameBytes(batch))
  })

  test("each board's bank holds the queue and every other setting; a smaller bank is refused with the reason", () => {
    const banks = repoBoardBanks()
    expect(banks.map((b) => b.bankBytes).sort((a, b) => a - b)).toEqual([8192, 16384, 16384])
    for (const { board, bankBytes } of banks) {
      expect(queueFootprintError(board, bankBytes), board).toBeUndefined()
      expect(queueCapacity(bankBytes), board).toBeGreaterThanOrEqual(STORAGE.queueSlots)
      expect(tunableErrors(defaults(), board), board).toEqual([])
    }
    // issue 20: a bank's records use bank - 48 B, the runtime's Wi-Fi and program records share it, and a
    // slot's rewrite needs its record free while the old copy counts; with the queue's state in each
    // slot (232 B a record) 27 slots do not fit a Pico W
    expect(queueCapacity(boardBankBytes("citymeter_picow"))).toBe(26)
    // 61 on an ESP32: the calibrations P_CAL, ADE_CAL and ADE_RETRY_S take 168 B of the other settings
    expect(queueCapacity(boardBankBytes("citymeter_esp32c3"))).toBe(61)
    const tooSmall = STORAGE.queueSlots * entryBytes(SLOT_BYTES)
    expect(queueFootprintError("tiny", tooSmall)).toMatch(/over the \d+ B usable of the \d+ B settings bank of tiny/)
  })

  test("the budget of a bank is exact: every record at its largest, the runtime's records and a rewrite's room", () => {
    // jd_fstor.c: a record is a 24 B entry plus its value aligned to 8 B, 8 B for an empty value
    expect([0, 1, 8, 9, 200].map(entryBytes)).toEqual([32, 32, 32, 40, 224])
    const b = storageBudget(8192)
    expect(b.usableBytes).toBe(8144)
    // wifi_ssid (32 B: 56), wifi_psk (64 B: 88), an update window's wssk_connstr (120 B: 144) and the
    // program's entry (24)
    expect(b.runtimeBytes).toBe(312)
    expect(b.gcHeadroomBytes).toBe(232)
    // a slot: 31 B of the queue's state and a frame of up to 177 B
    expect(b.slotBytes).toBe(208)
    // the two-record layout's state record and 27th slot, deleted once, keep an empty entry each
    expect(budgetedKeys().get(":st")).toBe(0)
    expect(budgetedKeys().get(":q26")).toBe(0)
    expect(budgetedKeys().get(":q25")).toBe(208)
    expect(b.freeBytes).toBe(b.usableBytes - b.queueBytes - b.otherBytes - b.runtimeBytes - b.gcHeadroomBytes)
    expect(b.freeBytes).toBeGreaterThanOrEqual(0)
    // one slot more than the queue has no longer fits the Pico W
    expect(b.freeBytes).toBeLessThan(entryBytes(SLOT_BYTES))
    // a provisioned value longer than its budgeted maximum is counted at its length, and refused
    // when the bank then overflows (citymeter provision and build call this)
    expect(queueFootprintError("citymeter_picow", 8192, { EXTRA_KEY: "x".repeat(200) })).toMatch(/at most 25 fit/)
  })
})
