// Meter configuration from DeviceScript settings (.env.defaults, .env.local, or deployed by
// `citymeter provision` / the simulator). Keys are at most 13 characters (DeviceScript limit).
import * as ds from "@devicescript/core"
import { readSetting } from "@devicescript/settings"

export const FIRMWARE_VERSION = "citymeter-fw 0.1.0"

export interface MeterConfig {
    meterId: string
    board: string
    mqttHost: string
    mqttPort: number
    /** "tcp" or "tls" */
    mqttProto: string
    mqttUser: string
    mqttPass: string
    /** Seconds per reading interval. */
    intervalS: number
    /** Intervals per uplink frame. */
    batch: number
}

function clampInt(v: number, lo: number, hi: number, fallback: number) {
    if (typeof v !== "number" || isNaN(v)) return fallback
    v = Math.round(v)
    return v < lo ? lo : v > hi ? hi : v
}

export async function loadConfig(): Promise<MeterConfig> {
    const id = await readSetting<string>("METER_ID", "")
    return {
        meterId: id && id.length ? id : `m-${ds.deviceIdentifier("self")}`,
        board: await readSetting<string>("BOARD", "unknown"),
        mqttHost: await readSetting<string>("MQTT_HOST", "127.0.0.1"),
        mqttPort: clampInt(await readSetting<number>("MQTT_PORT", 1883), 1, 65535, 1883),
        mqttProto: (await readSetting<string>("MQTT_PROTO", "tcp")) === "tls" ? "tls" : "tcp",
        mqttUser: await readSetting<string>("MQTT_USER", ""),
        mqttPass: await readSetting<string>("MQTT_PASS", ""),
        intervalS: clampInt(await readSetting<number>("INTERVAL_S", 900), 1, 86400, 900),
        // at most 8 intervals: a frame must fit one flash slot (store.ts MAX_FRAME_BYTES)
        batch: clampInt(await readSetting<number>("BATCH", 4), 1, 8, 4),
    }
}
