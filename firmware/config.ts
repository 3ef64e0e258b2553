// Meter configuration from DeviceScript settings (.env.defaults, .env.local, or deployed by
// `citymeter provision` / the simulator). Keys are at most 13 characters (DeviceScript limit).
// The tunables (interval, batch, alarm thresholds, pulse constants) can also be changed by a
// Config downlink; they are persisted under the same keys and echoed in the Birth frame.
import * as ds from "@devicescript/core"
import { readSetting, writeSetting } from "@devicescript/settings"

export const FIRMWARE_VERSION = "citymeter-fw 0.2.0"

/** Tunables: proto Config field (camelCase) ↔ settings key, default and bounds. */
interface Tunable {
    field: string
    key: string
    def: number
    min: number
    max: number
}
export const TUNABLES: Tunable[] = [
    { field: "intervalS", key: "INTERVAL_S", def: 900, min: 1, max: 86400 },
    // at most 8 intervals: a frame must fit one flash slot (store.ts MAX_FRAME_BYTES)
    { field: "batch", key: "BATCH", def: 4, min: 1, max: 8 },
    { field: "leakS", key: "LEAK_S", def: 86400, min: 1, max: 30 * 86400 },
    { field: "burstMlMin", key: "BURST_MLMIN", def: 60000, min: 1, max: 1000000000 },
    { field: "backflowMl", key: "BACKFLOW_ML", def: 100, min: 1, max: 10000000 },
    { field: "noFlowS", key: "NO_FLOW_S", def: 0, min: 0, max: 365 * 86400 },
    { field: "pressureLowPa", key: "P_LOW_PA", def: 150000, min: 0, max: 10000000 },
    { field: "pressureHighPa", key: "P_HIGH_PA", def: 800000, min: 1, max: 10000000 },
    { field: "undervoltageDv", key: "UNDERVOLT_DV", def: 2070, min: 0, max: 10000 },
    { field: "supplyLossDv", key: "SUPLOSS_DV", def: 500, min: 0, max: 10000 },
    // utility reed meters: 1 pulse per litre (pulseLimitError bounds it by the stated max flow)
    { field: "pulsesPerL", key: "PULSES_PER_L", def: 1, min: 1, max: 100000 },
    { field: "impPerKwh", key: "IMP_PER_KWH", def: 1000, min: 1, max: 100000 },
]

/** The tunables in force, named as the proto Config fields. */
export interface Tunables {
    intervalS: number
    batch: number
    leakS: number
    burstMlMin: number
    backflowMl: number
    noFlowS: number
    pressureLowPa: number
    pressureHighPa: number
    undervoltageDv: number
    supplyLossDv: number
    pulsesPerL: number
    impPerKwh: number
}

// ---- pulse inputs (issue 11): DeviceScript polls GPIO inputs every 100 ms (@devicescript/gpio
// subscribeDigital). A pulse is seen only if it lasts at least one poll and the gap after it too:
// at most 5 pulses/s (5 Hz at 50 % duty). cli/provision.ts applies the same rule.
export const GPIO_POLL_MS = 100
export const MAX_PULSE_HZ = 5
/** Stated maximum flow (settings MAX_FLOW_LMIN): Q4 of a DN15 utility meter is 3.125 m³/h ≈ 52 L/min. */
export const DEFAULT_MAX_FLOW_LMIN = 50
/** Stated maximum power on the S0 input (settings MAX_POWER_W): 48 A at 230 V. */
export const DEFAULT_MAX_POWER_W = 11000

/** Why a flow pulse constant cannot be counted at the stated max flow, or undefined when it can. */
export function pulseLimitError(pulsesPerL: number, maxFlowLmin: number): string {
    const hz = (pulsesPerL * maxFlowLmin) / 60
    if (hz <= MAX_PULSE_HZ) return undefined
    return `PULSES_PER_L=${pulsesPerL} at MAX_FLOW_LMIN=${maxFlowLmin} is ${Math.round(hz * 10) / 10} pulses/s; GPIO is polled every 100 ms, at most 5 pulses/s count (max ${Math.floor((MAX_PULSE_HZ * 60) / pulsesPerL)} L/min)`
}

/** Why an S0 constant cannot be counted at the stated max power, or undefined when it can. */
export function s0LimitError(impPerKwh: number, maxPowerW: number): string {
    const hz = (impPerKwh * maxPowerW) / 3600000
    if (hz <= MAX_PULSE_HZ) return undefined
    return `IMP_PER_KWH=${impPerKwh} at MAX_POWER_W=${maxPowerW} is ${Math.round(hz * 10) / 10} impulses/s; GPIO is polled every 100 ms, at most 5/s count (max ${Math.floor((MAX_PULSE_HZ * 3600000) / impPerKwh)} W)`
}

/** Called when a config downlink changes a pulse constant: the running drivers take it at once. */
export const pulseConstantListeners: ((t: Tunables) => void)[] = []

export interface MeterConfig {
    meterId: string
    board: string
    mqttHost: string
    mqttPort: number
    /** "tcp" or "tls" */
    mqttProto: string
    mqttUser: string
    mqttPass: string
    /** Stated maximum flow and power of the pulse inputs (not downlink tunables). */
    maxFlowLmin: number
    maxPowerW: number
    t: Tunables
}

export function clampInt(v: number, lo: number, hi: number, fallback: number) {
    if (typeof v !== "number" || isNaN(v)) return fallback
    v = Math.round(v)
    return v < lo ? lo : v > hi ? hi : v
}

export async function loadConfig(): Promise<MeterConfig> {
    const id = await readSetting<string>("METER_ID", "")
    const t: any = {}
    for (const u of TUNABLES) t[u.field] = clampInt(await readSetting<number>(u.key, u.def), u.min, u.max, u.def)
    const maxFlowLmin = clampInt(await readSetting<number>("MAX_FLOW_LMIN", DEFAULT_MAX_FLOW_LMIN), 1, 100000, DEFAULT_MAX_FLOW_LMIN)
    const maxPowerW = clampInt(await readSetting<number>("MAX_POWER_W", DEFAULT_MAX_POWER_W), 1, 1000000, DEFAULT_MAX_POWER_W)
    // constants the polling cannot count are refused: the defaults count instead
    const whyFlow = pulseLimitError(t.pulsesPerL, maxFlowLmin)
    if (whyFlow) {
        console.log(`citymeter: refused: ${whyFlow}`)
        t.pulsesPerL = 1
    }
    const whyS0 = s0LimitError(t.impPerKwh, maxPowerW)
    if (whyS0) {
        console.log(`citymeter: refused: ${whyS0}`)
        t.impPerKwh = 1000
    }
    return {
        meterId: id && id.length ? id : `m-${ds.deviceIdentifier("self")}`,
        board: await readSetting<string>("BOARD", "unknown"),
        mqttHost: await readSetting<string>("MQTT_HOST", "127.0.0.1"),
        mqttPort: clampInt(await readSetting<number>("MQTT_PORT", 1883), 1, 65535, 1883),
        mqttProto: (await readSetting<string>("MQTT_PROTO", "tcp")) === "tls" ? "tls" : "tcp",
        mqttUser: await readSetting<string>("MQTT_USER", ""),
        mqttPass: await readSetting<string>("MQTT_PASS", ""),
        maxFlowLmin,
        maxPowerW,
        t,
    }
}

/**
 * Merges a Config downlink into the tunables (zero fields stay unchanged, values are clamped)
 * and persists what changed. Returns the number of changed tunables.
 */
export async function applyConfig(tunables: Tunables, update: any, cfg?: MeterConfig): Promise<number> {
    const t: any = tunables
    let changed = 0
    let pulses = false
    for (const u of TUNABLES) {
        const v = update[u.field]
        if (v === undefined || v === null || v === 0) continue
        const c = clampInt(v, u.min, u.max, t[u.field])
        if (c === t[u.field]) continue
        const why = !cfg
            ? undefined
            : u.key === "PULSES_PER_L"
              ? pulseLimitError(c, cfg.maxFlowLmin)
              : u.key === "IMP_PER_KWH"
                ? s0LimitError(c, cfg.maxPowerW)
                : undefined
        if (why) {
            console.log(`citymeter: config refused: ${why}`)
            continue
        }
        if (u.key === "PULSES_PER_L" || u.key === "IMP_PER_KWH") pulses = true
        t[u.field] = c
        await writeSetting(u.key, c)
        changed++
    }
    if (pulses) for (const l of pulseConstantListeners) l(tunables)
    return changed
}
