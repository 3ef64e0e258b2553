// citymeter firmware: sensors → sampler → interval batches → protobuf frames → MQTT uplink.
import * as ds from "@devicescript/core"
import { MQTTClient, MQTTMessage } from "@devicescript/net"
import { readSetting, writeSetting } from "@devicescript/settings"
import { FIRMWARE_VERSION, loadConfig } from "./config"
import { Downlink, decodeDownlink, encodeUplink } from "./frames"
import { IntervalReading, Sampler, toBatch } from "./sampler"
import { downFilter, upTopic } from "./topics"

const cfg = await loadConfig()
const boot = (await readSetting<number>("BOOT", 0)) + 1
await writeSetting("BOOT", boot)
console.log(`citymeter: meter ${cfg.meterId} boot ${boot} interval ${cfg.intervalS}s x${cfg.batch}`)

const sampler = new Sampler(
    {
        flow: new ds.CitymeterWaterFlow(),
        electricity: new ds.CitymeterElectricityMeter(),
        pressure: new ds.CitymeterWaterPressure(),
    },
    await readSetting<number>("TOT_WATER", -1),
    await readSetting<number>("TOT_ENERGY", -1)
)

// ---- clock: wall time comes only from the bridge (TimeSync downlink); no NTP in DeviceScript
let unixOffsetMs: number = undefined
function stamp(millis: number): { s: number; synced: boolean } {
    if (unixOffsetMs === undefined) return { s: Math.floor(millis / 1000), synced: false }
    return { s: Math.floor((millis + unixOffsetMs) / 1000), synced: true }
}

// ---- uplink: frames wait here until the bridge acknowledges them (Ack downlink)
interface Pending {
    seq: number
    frame: Buffer
    sentAt: number
}
let seq = 0
const pending: Pending[] = []
const RESEND_MS = 10000

const mqtt = new MQTTClient({
    host: cfg.mqttHost,
    port: cfg.mqttPort,
    proto: cfg.mqttProto as any,
    username: cfg.mqttUser.length ? cfg.mqttUser : undefined,
    password: cfg.mqttPass.length ? cfg.mqttPass : undefined,
    clientId: cfg.meterId,
    keepAlive: 30,
    watchdogInterval: 5000,
    // The client packs the will with Buffer.from(), which copies a Buffer: the will is binary.
    will: {
        topic: upTopic(cfg.meterId, "death"),
        message: encodeUplink({ boot, death: {} }) as any,
    },
})

async function publishFrame(p: Pending) {
    p.sentAt = ds.millis()
    await mqtt.publish(upTopic(cfg.meterId, "readings"), p.frame, 1)
}

async function flushPending(all: boolean) {
    const now = ds.millis()
    for (const p of pending) {
        if (all || p.sentAt === 0 || now - p.sentAt >= RESEND_MS) await publishFrame(p)
    }
}

async function sendBirth() {
    const birth = encodeUplink({
        boot,
        seq,
        birth: {
            firmware: FIRMWARE_VERSION,
            board: cfg.board,
            intervalS: cfg.intervalS,
            batch: cfg.batch,
            waterTotalMl: Math.max(0, sampler.water.total),
            energyTotalWh: Math.max(0, sampler.energy.total),
            queued: pending.length,
            uptimeS: Math.floor(ds.millis() / 1000),
        },
    })
    await mqtt.publish(upTopic(cfg.meterId, "birth"), birth, 1)
}

function onDownlink(d: Downlink) {
    if (d.ack) {
        if (d.ack.boot !== boot) return
        for (let i = 0; i < pending.length; ++i) {
            if (pending[i].seq === d.ack.seq) {
                pending.insert(i, -1)
                break
            }
        }
    } else if (d.time) {
        // the bridge echoes our uptime: discount half the round trip
        const rttMs = Math.max(0, ds.millis() - d.time.uptimeS * 1000)
        unixOffsetMs = d.time.unixMs + rttMs / 2 - ds.millis()
        console.log(`citymeter: time synced`)
    } else if (d.config) {
        if (d.config.intervalS > 0) nextIntervalS = d.config.intervalS
        if (d.config.batch > 0) nextBatch = d.config.batch
    }
}

mqtt.onconnect.subscribe(async () => {
    console.log("citymeter: connected")
    await sendBirth()
    await flushPending(true)
})
mqtt.onerror.subscribe(e => console.log(`citymeter: mqtt ${e.message}`))
await mqtt.subscribe(downFilter(cfg.meterId), async (msg: MQTTMessage) => {
    try {
        onDownlink(decodeDownlink(msg.content))
    } catch (e) {
        console.log(`citymeter: bad downlink on ${msg.topic}`)
    }
})
await sampler.sample() // first reads set the counters' baselines before anything is sent
await mqtt.start()

// ---- sampling loop
let nextIntervalS = cfg.intervalS
let nextBatch = cfg.batch
let intervalMs = cfg.intervalS * 1000
let batchStart = ds.millis()
let intervalEnd = batchStart + intervalMs
let intervals: IntervalReading[] = []
let busy = false

async function closeBatch() {
    const t = stamp(batchStart)
    seq = seq + 1
    const frame = encodeUplink({
        boot,
        seq,
        readings: toBatch(intervals, t.s, t.synced, intervalMs / 1000, sampler),
    })
    intervals = []
    pending.push({ seq, frame, sentAt: 0 })
    await writeSetting("TOT_WATER", sampler.water.total)
    await writeSetting("TOT_ENERGY", sampler.energy.total)
    await flushPending(false)
}

setInterval(async () => {
    if (busy) return
    busy = true
    try {
        await sampler.sample()
        const now = ds.millis()
        if (now >= intervalEnd) {
            intervals.push(sampler.close())
            if (intervals.length >= cfg.batch) {
                await closeBatch()
                batchStart = intervalEnd
                if (nextIntervalS !== cfg.intervalS || nextBatch !== cfg.batch) {
                    cfg.intervalS = nextIntervalS
                    cfg.batch = nextBatch
                    intervalMs = cfg.intervalS * 1000
                    await writeSetting("INTERVAL_S", cfg.intervalS)
                    await writeSetting("BATCH", cfg.batch)
                    await sendBirth() // confirms the configuration now in force
                }
            }
            intervalEnd = intervalEnd + intervalMs
        } else if (pending.length) await flushPending(false)
    } catch (e) {
        console.log(`citymeter: sample failed`)
    }
    busy = false
}, Math.min(1000, Math.max(100, intervalMs / 4)))
