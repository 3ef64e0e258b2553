// citymeter firmware: sensors → sampler → interval batches → protobuf frames → flash queue → MQTT.
// Nothing leaves the queue before the bridge acknowledges it (Ack downlink, sent after its commit);
// DeviceScript's MQTT QoS 1 is not relied on (one packet id, PUBACK only logged).
import * as ds from "@devicescript/core"
import { readSetting, writeSetting } from "@devicescript/settings"
import { AlarmRules, IntervalFlags, alarmRulesOf, channelsOf } from "./alarms"
import { measures } from "./hardware"
import { FIRMWARE_VERSION, applyConfig, loadConfig } from "./config"
import { randomBuffer } from "@devicescript/crypto"
import { Downlink, Uplink, decodeDownlink, encodeSealedUplink, encodeUplink, openDownlink } from "./frames"
import { Uplink as UplinkF } from "./gen/wire"
import { IntervalReading, Sampler, toBatch } from "./sampler"
import { MqttLink } from "./mqtt"
import { MeterStore, QUEUE_SLOTS } from "./store"
import { KIND_ALARM, KIND_READINGS, downKindCode, keyId, nonceMillis, parseKey } from "./seal"
import { downFilter, upTopic } from "./topics"

const cfg = await loadConfig()
/**
 * A meter that has no boot counter (first start, flash wipe, re-flash) starts it at a random value
 * in [2^21, 2^28) (proto Uplink.boot): a new life never reuses an earlier one's (boot, seq), so the
 * bridge never takes its frames for duplicates, and sealed nonces never repeat.
 */
function firstBoot(): number {
    const r = randomBuffer(4)
    let v = 0
    for (let i = 0; i < 4; ++i) v = v * 256 + r.getAt(i, "u8")
    const span = 2 ** 28 - 2 ** 21
    return 2 ** 21 + (v - Math.floor(v / span) * span)
}
const lastBoot = await readSetting<number>("BOOT", 0)
const boot = lastBoot > 0 ? lastBoot + 1 : firstBoot()
await writeSetting("BOOT", boot)

// ---- sealing (issue 10; proto/topics.md "Sealed frames"): with a SEAL_KEY every uplink is sealed
// and only sealed downlinks are accepted
let sealKey: Buffer = parseKey(await readSetting<string>("SEAL_KEY", ""))
/** The key before a rotation: downlinks sealed before the bridge saw the switch still open. */
let previousKey: Buffer = undefined
/** Nonce time (ms) of the newest config or time downlink accepted: older ones are replays. */
let newestDownMs = await readSetting<number>("DL_MS", 0)
/**
 * proto Uplink.link: connection × 256 + birth number on that connection. The will (death) takes
 * connection × 256, each birth the next number, so no birth or death of a boot shares a nonce,
 * also when a config or a newly bound sensor makes the meter announce itself again.
 */
let connection = 0
let link = 0
function encode(u: Uplink): Buffer {
    return sealKey ? encodeSealedUplink(u, sealKey) : encodeUplink(u)
}
const store = new MeterStore()
await store.load()
console.log(
    `citymeter: meter ${cfg.meterId} boot ${boot} interval ${cfg.t.intervalS}s x${cfg.t.batch}, ${store.queuedCount()} frames queued`
)
console.log(`citymeter: frames ${sealKey ? "sealed (key id " + keyId(sealKey) + ")" : "open (no SEAL_KEY)"}`)

const st = store.state
const sampler = new Sampler(
    {
        flow: new ds.CitymeterWaterFlow(),
        electricity: new ds.CitymeterElectricityMeter(),
        pressure: new ds.CitymeterWaterPressure(),
        tamper: new ds.Button("tamper"),
        magnet: new ds.MagneticFieldLevel("magnet"),
    },
    st.w,
    st.e
)
// Counter values the persisted totals already include: pulses counted while the meter was off
// are added on the first read (or, if the sensor restarted too, everything since its restart).
if (st.w >= 0 && st.rw >= 0) sampler.water.lastRaw = st.rw
if (st.rv >= 0) sampler.reverse.lastRaw = st.rv
if (st.e >= 0 && st.re >= 0) sampler.energy.lastRaw = st.re

function persistTotals() {
    st.w = sampler.water.total
    st.rw = sampler.water.lastRaw === undefined ? -1 : sampler.water.lastRaw
    st.rv = sampler.reverse.lastRaw === undefined ? -1 : sampler.reverse.lastRaw
    st.e = sampler.energy.total
    st.re = sampler.energy.lastRaw === undefined ? -1 : sampler.energy.lastRaw
}

// ---- clock: wall time comes only from the bridge (TimeSync downlink); no NTP in DeviceScript
let unixOffsetMs: number = undefined
function stamp(millis: number): { s: number; synced: boolean } {
    if (unixOffsetMs === undefined) return { s: Math.floor(millis / 1000), synced: false }
    return { s: Math.floor((millis + unixOffsetMs) / 1000), synced: true }
}

// ---- uplink
let seq = 0
let born = false // birth sent on this connection
const RESEND_MS = 8000
const WINDOW = 4

const mqtt = new MqttLink({
    host: cfg.mqttHost,
    port: cfg.mqttPort,
    proto: cfg.mqttProto,
    username: cfg.mqttUser.length ? cfg.mqttUser : undefined,
    password: cfg.mqttPass.length ? cfg.mqttPass : undefined,
    clientId: cfg.meterId,
    keepAliveS: 30,
    // the last will is a death frame (proto: Death) of this boot and connection (onBeforeConnect)
    will: { topic: upTopic(cfg.meterId, "death"), payload: encode({ boot, death: {} }), qos: 1 },
})
mqtt.onBeforeConnect = () => {
    connection = connection + 1
    link = connection * 256
    mqtt.opts.will.payload = encode({ boot, link, death: {} })
}

const connected = () => mqtt.connected

/** What this meter measures: bound sensors, less what the board's drivers cannot (hardware.ts). */
function capabilities(intervalS: number): IntervalFlags {
    return {
        intervalS,
        hasWater: sampler.hasWater,
        hasElectricity: sampler.hasElectricity,
        hasPressure: sampler.hasPressure,
        hasReverse: measures.reverseFlow,
        hasVoltage: measures.voltage,
        hasPower: measures.power,
        hasTamper: sampler.hasTamper,
        hasMagnet: sampler.hasMagnet,
    }
}

/** The channels the last birth announced: sensors bind a little after start, and a birth follows them. */
let bornChannels = ""
function channelsChanged(): boolean {
    return channelsOf(capabilities(cfg.t.intervalS)).join(",") !== bornChannels
}

async function sendBirth() {
    // a new number for every birth; 255 births on one connection are followed by a reconnect's
    if (link - connection * 256 < 255) link = link + 1
    const caps = capabilities(cfg.t.intervalS)
    bornChannels = channelsOf(caps).join(",")
    const birth = encode({
        boot,
        seq,
        link,
        birth: {
            firmware: FIRMWARE_VERSION,
            board: cfg.board,
            intervalS: cfg.t.intervalS,
            batch: cfg.t.batch,
            waterTotalMl: Math.max(0, sampler.water.total),
            energyTotalWh: Math.max(0, sampler.energy.total),
            queued: store.queuedCount(),
            dropped: st.d,
            uptimeS: Math.floor(ds.millis() / 1000),
            config: cfg.t,
            keyId: sealKey ? keyId(sealKey) : 0,
            channels: channelsOf(caps),
            alarmRules: alarmRulesOf(caps),
        },
    })
    if (await mqtt.publish(upTopic(cfg.meterId, "birth"), birth, 1)) born = true
}

/** Sends queued frames oldest first, at most WINDOW unacknowledged in flight; resends stale ones. */
async function pump() {
    if (!connected()) return
    if (born && channelsChanged()) born = false
    if (!born) await sendBirth()
    if (!born) return
    const now = ds.millis()
    let inflight = 0
    // a snapshot: acks arriving during the awaits below shift store.frames
    const frames = store.frames.slice(0)
    for (const f of frames) {
        if (f.acked) continue
        if (f.sentAt !== 0 && now - f.sentAt < RESEND_MS) {
            inflight++
            continue
        }
        if (inflight >= WINDOW) break
        const topic = upTopic(cfg.meterId, f.body === UplinkF.alarm ? "alarm" : "readings")
        if (!(await mqtt.publish(topic, f.frame, 1))) return
        f.sentAt = ds.millis()
        inflight++
    }
}

// Downlinks are counted, not logged one by one: a flood must cost no more than its bytes (issue 9).
// The counts are logged with the next frame.
const rx = { acks: 0, ignored: 0, bad: 0, time: 0, resend: 0, refused: 0 }

function onDownlink(d: Downlink) {
    if (d.ack) {
        rx.acks++
        if (!store.ack(d.ack.boot, d.ack.seq)) rx.ignored++
    } else if (d.time) {
        // an answer to a birth echoes our uptime: discount half the round trip (0: pushed time)
        const rttMs = d.time.uptimeS > 0 ? Math.max(0, ds.millis() - d.time.uptimeS * 1000) : 0
        if (unixOffsetMs === undefined) console.log(`citymeter: time synced`)
        unixOffsetMs = d.time.unixMs + rttMs / 2 - ds.millis()
        rx.time++
    } else if (d.config) {
        if (d.config.sealKey) {
            const next: Buffer = d.config.sealKey
            setTimeout(async () => {
                await rotateKey(next)
            }, 0)
            return
        }
        pendingConfig = d.config // applied at the next frame boundary
    } else if (d.resend) {
        rx.resend++
        for (const f of store.frames)
            if (f.boot === d.resend.boot && f.seq >= d.resend.fromSeq) f.sentAt = 0
    }
}

mqtt.onConnect = () => {
    console.log("citymeter: connected")
    born = false
    for (const f of store.frames) f.sentAt = 0 // a new session: everything unacked goes again
}
/**
 * Key rotation (proto Config.seal_key): persist the next key, switch to it, and confirm it with a
 * birth sealed under it (Birth.key_id). The old key still opens downlinks until the next reboot.
 */
async function rotateKey(next: Buffer) {
    if (next.length !== 32 || !sealKey) return
    await writeSetting("SEAL_KEY", next.toString("hex"))
    previousKey = sealKey
    sealKey = next
    console.log(`citymeter: sealing key rotated (key id ${keyId(next)})`)
    born = false
}

/** A sealed meter opens a downlink with its key (or the previous one); unsealed, forged or replayed ones are refused. */
function openSealed(topic: string, d: Downlink): Downlink {
    const kind = downKindCode(topic.slice(topic.lastIndexOf("/") + 1))
    let inner = openDownlink(d, kind, sealKey)
    if (!inner && previousKey) inner = openDownlink(d, kind, previousKey)
    if (!inner) return undefined
    if (inner.config || inner.time) {
        const ms = nonceMillis(d.nonce)
        if (ms <= newestDownMs) return undefined // a replay (or older than one accepted)
        newestDownMs = ms
        if (inner.config)
            setTimeout(async () => {
                await writeSetting("DL_MS", ms)
            }, 0)
    }
    return inner
}

mqtt.onMessage = (topic: string, payload: Buffer) => {
    try {
        const d = decodeDownlink(payload)
        const inner = sealKey ? openSealed(topic, d) : d
        if (inner) onDownlink(inner)
        else rx.refused++
    } catch (e) {
        rx.bad++
    }
}
mqtt.subscribe(downFilter(cfg.meterId))
await sampler.sample() // first reads set the counters' baselines before anything is sent
// connects, reads and reconnects forever, in the background
setTimeout(async () => {
    await mqtt.run()
}, 0)

let pumping = false
setInterval(async () => {
    if (pumping) return
    pumping = true
    try {
        await pump()
    } catch (e) {
        console.log(`citymeter: send failed`)
    }
    pumping = false
}, 250)

// ---- sampling loop
let pendingConfig: any = undefined
const rules = new AlarmRules()
let intervalMs = cfg.t.intervalS * 1000
let batchStart = ds.millis()
let intervalEnd = batchStart + intervalMs
let intervals: IntervalReading[] = []
let busy = false

/** Raises and clears alarms for the interval that started at `startMillis`; queued like frames. */
async function checkAlarms(r: IntervalReading, startMillis: number) {
    const edges = rules.evaluate(r, capabilities(intervalMs / 1000), cfg.t)
    const t = stamp(startMillis)
    for (const e of edges) {
        seq = seq + 1
        console.log(`citymeter: alarm ${e.type} ${e.active ? "raised" : "cleared"} boot=${boot} seq=${seq}`)
        await store.push(
            encode({
                boot,
                seq,
                alarm: { type: e.type, active: e.active, timeS: t.s, timeSynced: t.synced, value: e.value },
            }),
            sealKey ? KIND_ALARM : 0
        )
    }
}

function logDownlinks() {
    if (!rx.ignored && !rx.bad && !rx.time && !rx.resend && !rx.refused && !mqtt.skipped && !mqtt.sendRetries) return
    // two lines: DeviceScript's compiler takes at most 7 substitutions in a template
    console.log(
        `citymeter: downlinks: ${rx.acks} acks (ignored ${rx.ignored} acks for no queued frame), ${rx.bad} bad, ${rx.time} time, ${rx.resend} resend`
    )
    if (rx.refused) console.log(`citymeter: downlinks refused (unsealed, forged or replayed): ${rx.refused}`)
    console.log(
        `citymeter: mqtt: ${mqtt.skipped} packets skipped, ${mqtt.sendRetries} send retries, ${mqtt.sendFailures} sends failed`
    )
    rx.acks = 0
    rx.ignored = 0
    rx.bad = 0
    rx.time = 0
    rx.resend = 0
    rx.refused = 0
    mqtt.skipped = 0
    mqtt.sendRetries = 0
    mqtt.sendFailures = 0
}

async function closeBatch() {
    const t = stamp(batchStart)
    seq = seq + 1
    const readings = toBatch(intervals, t.s, t.synced, intervalMs / 1000, sampler)
    // made while the uplink is down: it will arrive late, from the queue
    readings.replayed = !connected()
    const frame = encode({ boot, seq, readings })
    console.log(`citymeter: frame boot=${boot} seq=${seq} n=${intervals.length}`)
    logDownlinks()
    intervals = []
    // Totals are persisted with the frame that carries them, never ahead of it: after a power
    // cut the first interval of the next boot gets everything since this frame.
    persistTotals()
    await store.push(frame, sealKey ? KIND_READINGS : 0)
}

setInterval(async () => {
    if (busy) return
    busy = true
    try {
        await sampler.sample()
        const now = ds.millis()
        if (now >= intervalEnd) {
            const r = sampler.close()
            intervals.push(r)
            await checkAlarms(r, intervalEnd - intervalMs)
            if (intervals.length >= cfg.t.batch) {
                await closeBatch() // saves the state record with the frame
                batchStart = intervalEnd
                if (pendingConfig) {
                    const changed = await applyConfig(cfg.t, pendingConfig)
                    pendingConfig = undefined
                    intervalMs = cfg.t.intervalS * 1000
                    // a refused config changes nothing (applyConfig logged why); the birth says so
                    if (changed >= 0) console.log(`citymeter: config applied (${changed} changed)`)
                    born = false // the next birth confirms the configuration now in force
                }
            }
            intervalEnd = intervalEnd + intervalMs
        }
    } catch (e) {
        console.log(`citymeter: sample failed`)
    }
    busy = false
}, Math.min(1000, Math.max(100, intervalMs / 4)))

console.log(`citymeter: queue ${QUEUE_SLOTS} frames`)
