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
    { field: "pulsesPerL", key: "PULSES_PER_L", def: 450, min: 1, max: 100000 },
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

export interface MeterConfig {
    meterId: string
    board: string
    mqttHost: string
    mqttPort: number
    /** "tcp" or "tls" */
    mqttProto: string
    mqttUser: string
    mqttPass: string
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
    return {
        meterId: id && id.length ? id : `m-${ds.deviceIdentifier("self")}`,
        board: await readSetting<string>("BOARD", "unknown"),
        mqttHost: await readSetting<string>("MQTT_HOST", "127.0.0.1"),
        mqttPort: clampInt(await readSetting<number>("MQTT_PORT", 1883), 1, 65535, 1883),
        mqttProto: (await readSetting<string>("MQTT_PROTO", "tcp")) === "tls" ? "tls" : "tcp",
        mqttUser: await readSetting<string>("MQTT_USER", ""),
        mqttPass: await readSetting<string>("MQTT_PASS", ""),
        t,
    }
}

/**
 * Merges a Config downlink into the tunables (zero fields stay unchanged, values are clamped)
 * and persists what changed. Returns the number of changed tunables.
 */
export async function applyConfig(tunables: Tunables, update: any): Promise<number> {
    const t: any = tunables
    let changed = 0
    for (const u of TUNABLES) {
        const v = update[u.field]
        if (v === undefined || v === null || v === 0) continue
        const c = clampInt(v, u.min, u.max, t[u.field])
        if (c === t[u.field]) continue
        t[u.field] = c
        await writeSetting(u.key, c)
        changed++
    }
    return changed
}
