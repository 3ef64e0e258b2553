// citymeter.v1 frames in the firmware: the Uplink encoder and the Downlink decoder.
// Message shapes mirror the protobuf JSON mapping (camelCase fields), so the golden frames'
// JSON can be fed to the encoder as is. Field numbers come from firmware/gen/wire.ts.
import { Tunables } from "./gen/tunables"
import { PbReader, PbWriter, WIRE_LEN, WIRE_VARINT } from "./pb"
import {
    KIND_ACK,
    KIND_ALARM,
    KIND_BIRTH,
    KIND_CONFIG,
    KIND_TIME,
    KIND_UPDATE,
    KIND_DEATH,
    KIND_READINGS,
    NONCE_BYTES,
    downlinkNonce,
    open,
    seal,
    uplinkNonce,
} from "./seal"
import {
    Ack,
    Alarm as AlarmF,
    Birth as BirthF,
    Config,
    Downlink as DownlinkF,
    ElectricitySeries as ElectricityF,
    PressureSeries as PressureF,
    ReadingBatch as ReadingsF,
    Resend,
    TimeSync,
    UpdateWindow,
    Uplink as UplinkField,
    WaterSeries as WaterF,
} from "./gen/wire"

export interface WaterSeries {
    totalMl?: number
    volumeMl?: number[]
    reverseMl?: number[]
}
export interface ElectricitySeries {
    totalWh?: number
    energyWh?: number[]
    powerW?: number[]
    voltageDv?: number[]
    /** proto voltage_delta_dv: the first voltage, then changes (what the sampler sends). */
    voltageDeltaDv?: number[]
}
export interface PressureSeries {
    avgPa?: number[]
    belowAvgPa?: number[]
    aboveAvgPa?: number[]
}
export interface ReadingBatch {
    startS?: number
    timeSynced?: boolean
    intervalS?: number
    water?: WaterSeries
    electricity?: ElectricitySeries
    pressure?: PressureSeries
    replayed?: boolean
    /** The first frame after the meter started: counts from before may be missing. */
    afterReboot?: boolean
}
export interface Birth {
    firmware?: string
    board?: string
    intervalS?: number
    batch?: number
    waterTotalMl?: number
    energyTotalWh?: number
    queued?: number
    dropped?: number
    uptimeS?: number
    /** proto Config: the tunables in force */
    config?: Tunables
    /** The sealing key in force (seal.ts keyId), 0 when open. */
    keyId?: number
    /** proto Channel and AlarmType numbers: what the meter measures and evaluates. */
    channels?: number[]
    alarmRules?: number[]
    /** Flash writes refused since boot (store.ts MeterStore.unstored). */
    unstored?: number
}
export interface Alarm {
    type?: number
    active?: boolean
    timeS?: number
    timeSynced?: boolean
    value?: number
}
export interface Uplink {
    boot?: number
    seq?: number
    /** Births and deaths: the connection of this boot (proto Uplink.link). */
    link?: number
    readings?: ReadingBatch
    birth?: Birth
    alarm?: Alarm
    /** An empty message: the topic says it all. */
    death?: Record<string, never>
}

function encodeWater(s: WaterSeries) {
    const w = new PbWriter()
    w.uint(WaterF.totalMl, s.totalMl)
    w.packedUint(WaterF.volumeMl, s.volumeMl)
    w.packedUint(WaterF.reverseMl, s.reverseMl)
    return w
}

function encodeElectricity(s: ElectricitySeries) {
    const w = new PbWriter()
    w.uint(ElectricityF.totalWh, s.totalWh)
    w.packedUint(ElectricityF.energyWh, s.energyWh)
    w.packedSint(ElectricityF.powerW, s.powerW)
    w.packedUint(ElectricityF.voltageDv, s.voltageDv)
    w.packedSint(ElectricityF.voltageDeltaDv, s.voltageDeltaDv)
    return w
}

function encodePressure(s: PressureSeries) {
    const w = new PbWriter()
    w.packedUint(PressureF.avgPa, s.avgPa)
    w.packedUint(PressureF.belowAvgPa, s.belowAvgPa)
    w.packedUint(PressureF.aboveAvgPa, s.aboveAvgPa)
    return w
}

function encodeReadings(r: ReadingBatch) {
    const w = new PbWriter(128)
    w.uint(ReadingsF.startS, r.startS)
    w.bool(ReadingsF.timeSynced, r.timeSynced)
    w.uint(ReadingsF.intervalS, r.intervalS)
    if (r.water) w.message(ReadingsF.water, encodeWater(r.water))
    if (r.electricity) w.message(ReadingsF.electricity, encodeElectricity(r.electricity))
    if (r.pressure) w.message(ReadingsF.pressure, encodePressure(r.pressure))
    w.bool(ReadingsF.replayed, r.replayed)
    w.bool(ReadingsF.afterReboot, r.afterReboot)
    return w
}

function encodeBirth(b: Birth) {
    const w = new PbWriter()
    w.string(BirthF.firmware, b.firmware)
    w.string(BirthF.board, b.board)
    w.uint(BirthF.intervalS, b.intervalS)
    w.uint(BirthF.batch, b.batch)
    w.uint(BirthF.waterTotalMl, b.waterTotalMl)
    w.uint(BirthF.energyTotalWh, b.energyTotalWh)
    w.uint(BirthF.queued, b.queued)
    w.uint(BirthF.dropped, b.dropped)
    w.uint(BirthF.uptimeS, b.uptimeS)
    if (b.config) w.message(BirthF.config, encodeConfig(b.config))
    w.fixed32(BirthF.keyId, b.keyId)
    w.packedUint(BirthF.channels, b.channels)
    w.packedUint(BirthF.alarmRules, b.alarmRules)
    w.uint(BirthF.unstored, b.unstored)
    return w
}

/** Config's fields are uint32 but for seal_key, which a meter never sends: written in field order. */
function encodeConfig(c: Tunables) {
    const w = new PbWriter()
    const fields = Config as Record<string, number>
    const values = c as unknown as Record<string, number>
    for (const k of Object.keys(Config)) if (k !== "sealKey") w.uint(fields[k], values[k])
    return w
}

function encodeAlarm(a: Alarm) {
    const w = new PbWriter()
    w.uint(AlarmF.type, a.type)
    w.bool(AlarmF.active, a.active)
    w.uint(AlarmF.timeS, a.timeS)
    w.bool(AlarmF.timeSynced, a.timeSynced)
    w.sint(AlarmF.value, a.value)
    return w
}

function writeBody(w: PbWriter, u: Uplink) {
    if (u.readings) w.message(UplinkField.readings, encodeReadings(u.readings))
    else if (u.birth) w.message(UplinkField.birth, encodeBirth(u.birth))
    else if (u.alarm) w.message(UplinkField.alarm, encodeAlarm(u.alarm))
    else if (u.death) w.message(UplinkField.death, new PbWriter(1))
}

export function encodeUplink(u: Uplink): Buffer {
    const w = new PbWriter(160)
    w.uint(UplinkField.boot, u.boot)
    w.uint(UplinkField.seq, u.seq)
    w.uint(UplinkField.link, u.link)
    writeBody(w, u)
    return w.finish()
}

/** The nonce kind byte of an uplink's body (seal.ts). */
function upKindCode(u: Uplink): number {
    if (u.readings) return KIND_READINGS
    if (u.birth) return KIND_BIRTH
    if (u.alarm) return KIND_ALARM
    return KIND_DEATH
}

/**
 * A sealed uplink: boot, seq and link in the clear, the body sealed under `key` with a nonce
 * that binds them (proto Uplink.sealed).
 */
export function encodeSealedUplink(u: Uplink, key: Buffer): Buffer {
    // the plaintext is the body message itself: the topic's kind says which
    const body = u.readings
        ? encodeReadings(u.readings)
        : u.birth
          ? encodeBirth(u.birth)
          : u.alarm
            ? encodeAlarm(u.alarm)
            : new PbWriter(1)
    const kind = upKindCode(u)
    const counter = kind === KIND_READINGS || kind === KIND_ALARM ? u.seq : u.link
    const sealed = seal(key, uplinkNonce(kind, u.boot ? u.boot : 0, counter ? counter : 0), body.finish())
    const w = new PbWriter(sealed.length + 16)
    w.uint(UplinkField.boot, u.boot)
    w.uint(UplinkField.seq, u.seq)
    w.uint(UplinkField.link, u.link)
    w.bytes(UplinkField.sealed, sealed)
    return w.finish()
}

/** proto Config as a downlink carries it: uint32 fields by camelCase name (absent: 0 = unchanged), and seal_key. */
export interface ConfigUpdate {
    [field: string]: number | Buffer | undefined
    sealKey?: Buffer
}

export interface Downlink {
    // decodeDownlink fills every field of a submessage it found (absent: 0, as proto3 reads it)
    ack?: { boot: number; seq: number }
    time?: { unixMs: number; uptimeS: number }
    config?: ConfigUpdate
    resend?: { boot: number; fromSeq: number }
    /** proto UpdateWindow: the runtime's WSSK connection string (never logged) and the window, s. */
    update?: { conn: string; windowS: number }
    /** A sealed downlink (proto Downlink.sealed) and its 12 clear nonce bytes. */
    sealed?: Buffer
    nonce?: Buffer
}

/** Reads the varint fields of a flat submessage, indexed by field number (absent fields are 0). */
function readVarints(buf: Buffer, maxField: number): number[] {
    const r = new PbReader(buf)
    const out: number[] = []
    for (let i = 0; i <= maxField; ++i) out.push(0)
    while (r.next()) {
        if (r.wire === WIRE_VARINT && r.field <= maxField) out[r.field] = r.varint()
        else r.skip()
    }
    return out
}

/** The last bytes field `field` of a message, or undefined. */
function readBytesField(buf: Buffer, field: number): Buffer | undefined {
    const r = new PbReader(buf)
    let out: Buffer | undefined = undefined
    while (r.next()) {
        if (r.wire === WIRE_LEN && r.field === field) out = r.bytes()
        else r.skip()
    }
    return out
}

/**
 * Opens a sealed downlink received on a `down/<kind>` topic with `key`: the inner Downlink, or
 * undefined when it is not sealed or its tag does not verify (forged, or another key).
 */
export function openDownlink(d: Downlink, kindCode: number, key: Buffer): Downlink | undefined {
    if (!d.sealed || !d.nonce || d.nonce.length !== NONCE_BYTES - 1 || kindCode === 0) return undefined
    const plain = open(key, downlinkNonce(kindCode, d.nonce), d.sealed)
    if (!plain) return undefined
    // the plaintext is the body message of the topic's kind: read it as that field of a Downlink
    const field =
        kindCode === KIND_ACK
            ? DownlinkF.ack
            : kindCode === KIND_TIME
              ? DownlinkF.time
              : kindCode === KIND_CONFIG
                ? DownlinkF.config
                : kindCode === KIND_UPDATE
                  ? DownlinkF.update
                  : DownlinkF.resend
    const w = new PbWriter(plain.length + 4)
    w.bytes(field, plain)
    return decodeDownlink(w.finish())
}

/** Decodes a Downlink; unknown fields are skipped (forward compatible). Throws on bad bytes. */
export function decodeDownlink(buf: Buffer): Downlink {
    const r = new PbReader(buf)
    const d: Downlink = {}
    while (r.next()) {
        if (r.wire !== WIRE_LEN) {
            r.skip()
            continue
        }
        const f = r.field
        const raw = r.bytes()
        if (f === DownlinkF.sealed) {
            d.sealed = raw
            continue
        }
        if (f === DownlinkF.nonce) {
            d.nonce = raw
            continue
        }
        const v = readVarints(raw, 15)
        if (f === DownlinkF.ack) d.ack = { boot: v[Ack.boot], seq: v[Ack.seq] }
        else if (f === DownlinkF.time) d.time = { unixMs: v[TimeSync.unixMs], uptimeS: v[TimeSync.uptimeS] }
        else if (f === DownlinkF.config) {
            const c: ConfigUpdate = {}
            const fields = Config as Record<string, number>
            for (const k of Object.keys(Config)) if (k !== "sealKey") c[k] = v[fields[k]]
            c.sealKey = readBytesField(raw, Config.sealKey)
            d.config = c
        } else if (f === DownlinkF.resend) d.resend = { boot: v[Resend.boot], fromSeq: v[Resend.fromSeq] }
        else if (f === DownlinkF.update) {
            const conn = readBytesField(raw, UpdateWindow.conn)
            d.update = { conn: conn ? conn.toString() : "", windowS: v[UpdateWindow.windowS] }
        }
    }
    return d
}
