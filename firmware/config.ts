// Meter configuration from DeviceScript settings (.env.defaults, .env.local, or deployed by
// `citymeter provision` / the simulator). Keys are at most 13 characters (DeviceScript limit).
// The tunables (interval, batch, alarm thresholds, pulse constants) can also be changed by a
// Config downlink; they are persisted under the same keys and echoed in the Birth frame.
import * as ds from "@devicescript/core"
import { readSetting, writeSetting } from "@devicescript/settings"
import { ConfigUpdate } from "./frames"
import { VERSION } from "./gen/version"
import {
    MAX_FRAME_BYTES,
    PULSE_LIMITS,
    PULSE_SAMPLE_MS,
    PulseLimits,
    STRICTEST_PULSE_LIMITS,
    TUNABLES,
    Tunables,
    WORST_FRAME_BYTES,
} from "./gen/tunables"

/** Birth.firmware; the number is package.json "version" (firmware/gen/version.ts, npm run gen). */
export const FIRMWARE_VERSION = "citymeter-fw " + VERSION

// The tunables (key, default, bounds, unit, proto Config field) come from proto/tunables.json,
// generated into gen/tunables.ts by `npm run gen`; bridge/src/tunables.ts applies the same rules.

// ---- pulse inputs: button services sample the pins in C every PULSE_SAMPLE_MS (pulses.ts). A
// pulse is counted when a sample lands inside it and inside the gap after it; each board's figures
// (shortest pulse and gap, highest rate) are in proto/tunables.json pulseInputs.

/** A board's pulse limits; a board without figures of its own gets the strictest. */
export function pulseLimitsOf(board: string): PulseLimits {
    const l = board ? PULSE_LIMITS[board] : undefined
    return l ? l : STRICTEST_PULSE_LIMITS
}

/** Pulses per second `board` counts for pulses of `pulseMs`: a sample in each pulse and each gap. */
export function maxPulseHz(pulseMs: number, board: string): number {
    const l = pulseLimitsOf(board)
    return Math.min(l.maxPulseHz, 1000 / (Math.max(pulseMs, l.minPulseMs) + l.minPulseMs))
}

const round1 = (x: number) => Math.round(x * 10) / 10

/** Why these pulse settings cannot be counted on `board`, one sentence each (none: they can). */
export function pulseLimitErrors(t: Tunables, board: string): string[] {
    const out: string[] = []
    const l = pulseLimitsOf(board)
    if (t.pulseMs < l.minPulseMs)
        out.push(
            `PULSE_MS=${t.pulseMs}: pulses under ${l.minPulseMs} ms are missed (pins sampled every ${PULSE_SAMPLE_MS} ms)`,
        )
    const hz = maxPulseHz(t.pulseMs, board)
    const flowHz = (t.pulsesPerL * t.maxFlowLmin) / 60
    if (flowHz > hz)
        out.push(
            `PULSES_PER_L=${t.pulsesPerL} at MAX_FLOW_LMIN=${t.maxFlowLmin} is ${round1(flowHz)} pulses/s; at most ${round1(hz)}/s count (max ${round1((hz * 60) / t.pulsesPerL)} L/min)`,
        )
    const s0Hz = (t.impPerKwh * t.maxPowerW) / 3600000
    if (s0Hz > hz)
        out.push(
            `IMP_PER_KWH=${t.impPerKwh} at MAX_POWER_W=${t.maxPowerW} is ${round1(s0Hz)} impulses/s; at most ${round1(hz)}/s count (max ${Math.floor((hz * 3600000) / t.impPerKwh)} W)`,
        )
    return out
}

/** Why a BATCH's frames could outgrow a flash slot (worst case, sealed), or undefined. */
export function batchSlotError(batch: number): string | undefined {
    const max = WORST_FRAME_BYTES.length - 1
    if (batch <= max) return undefined
    const bytes =
        batch <= WORST_FRAME_BYTES.length ? `${WORST_FRAME_BYTES[batch - 1]} B` : `over ${WORST_FRAME_BYTES[max]} B`
    return `BATCH=${batch}: a frame can take ${bytes}, over the ${MAX_FRAME_BYTES} B a flash slot holds for a frame (at most BATCH=${max})`
}

/** Tunables (or a Config update) by proto Config field name (TunableDef.field). */
export type TunableFields = Record<string, number>

/** The tunables indexed by field name. */
export function fieldsOf(t: Tunables): TunableFields {
    return t as unknown as TunableFields
}

/** Everything that makes these tunables unusable on `board`: bounds, pulse limits, flash slot. */
export function tunableErrors(t: Tunables, board: string): string[] {
    const v = fieldsOf(t)
    const out: string[] = []
    for (const u of TUNABLES) {
        const x = v[u.field]
        if (typeof x !== "number" || isNaN(x) || Math.round(x) !== x || x < u.min || x > u.max) {
            const slot = u.key === "BATCH" && typeof x === "number" ? batchSlotError(x) : undefined
            out.push(slot ? slot : `${u.key}=${x} outside ${u.min}..${u.max} ${u.unit}`)
        }
    }
    if (out.length) return out
    return pulseLimitErrors(t, board)
}

/** Called when a config downlink changes a pulse constant: the running drivers take it at once. */
export const pulseConstantListeners: ((t: Tunables) => void)[] = []

export interface MeterConfig {
    meterId: string
    board: string
    mqttHost: string
    mqttPort: number
    /** "tcp" or "tls" */
    mqttProto: "tcp" | "tls"
    mqttUser: string
    mqttPass: string
    t: Tunables
}

/** The tunables the pulse limits relate. */
const PULSE_FIELDS = ["pulsesPerL", "impPerKwh", "maxFlowLmin", "maxPowerW", "pulseMs"]

/** The defaults of every tunable. */
export function defaultTunables(): Tunables {
    const t: TunableFields = {}
    for (const u of TUNABLES) t[u.field] = u.def
    return t as unknown as Tunables
}

export async function loadConfig(): Promise<MeterConfig> {
    const id = await readSetting<string>("METER_ID", "")
    const board = await readSetting<string>("BOARD", "unknown")
    const t: TunableFields = {}
    // settings the meter cannot run with are refused and logged; the defaults run instead
    for (const u of TUNABLES) {
        const v = await readSetting<number>(u.key, u.def)
        const bad = typeof v !== "number" || isNaN(v) || Math.round(v) !== v || v < u.min || v > u.max
        if (bad) console.log(`citymeter: settings refused: ${u.key}=${v} outside ${u.min}..${u.max}; default ${u.def}`)
        t[u.field] = bad ? u.def : v
    }
    const why = pulseLimitErrors(t as unknown as Tunables, board)
    for (const w of why) console.log(`citymeter: settings refused: ${w}`)
    if (why.length) {
        const d = fieldsOf(defaultTunables())
        for (const f of PULSE_FIELDS) t[f] = d[f]
        console.log(`citymeter: settings refused: the pulse inputs run with their defaults`)
    }
    return {
        meterId: id && id.length ? id : `m-${ds.deviceIdentifier("self")}`,
        board,
        mqttHost: await readSetting<string>("MQTT_HOST", "127.0.0.1"),
        mqttPort: clampPort(await readSetting<number>("MQTT_PORT", 1883)),
        mqttProto: (await readSetting<string>("MQTT_PROTO", "tcp")) === "tls" ? "tls" : "tcp",
        mqttUser: await readSetting<string>("MQTT_USER", ""),
        mqttPass: await readSetting<string>("MQTT_PASS", ""),
        t: t as unknown as Tunables,
    }
}

function clampPort(v: number): number {
    return typeof v === "number" && v >= 1 && v <= 65535 ? Math.round(v) : 1883
}

/**
 * Merges a Config downlink into the tunables (zero fields stay unchanged) and persists what
 * changed. A downlink that any rule refuses (bounds, pulse limits, flash slot) changes nothing:
 * the reasons are logged and the next Birth confirms the configuration still in force.
 * Returns the number of changed tunables, or -1 when refused.
 */
export async function applyConfig(tunables: Tunables, update: ConfigUpdate, board: string): Promise<number> {
    const t = fieldsOf(tunables)
    const next: TunableFields = {}
    let changes = 0
    for (const u of TUNABLES) {
        const v = update[u.field] as number
        const set = v !== undefined && v !== null && v !== 0
        next[u.field] = set ? v : t[u.field]
        if (set && v !== t[u.field]) changes++
    }
    const why = tunableErrors(next as unknown as Tunables, board)
    if (why.length) {
        for (const w of why) console.log(`citymeter: config refused: ${w}`)
        return -1
    }
    let pulses = false
    for (const u of TUNABLES) {
        if (next[u.field] === t[u.field]) continue
        if (u.key === "PULSES_PER_L" || u.key === "IMP_PER_KWH") pulses = true
        t[u.field] = next[u.field]
        await writeSetting(u.key, next[u.field])
    }
    if (pulses) for (const l of pulseConstantListeners) l(tunables)
    return changes
}
