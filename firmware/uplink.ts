// The uplink: frame numbers (boot, seq), the MQTT connection with its will, births, the pump that
// sends queued frames until the bridge acknowledges them, and the downlinks (an update window's
// hand-over of the socket: update-window.ts).
// Nothing leaves the queue before the bridge acknowledges it (Ack downlink, sent after its commit);
// DeviceScript's MQTT QoS 1 is not relied on (one packet id, PUBACK only logged).
import * as ds from "@devicescript/core"
import { alarmRulesOf, channelsOf } from "./alarms"
import { Clock } from "./clock"
import { FIRMWARE_VERSION, MeterConfig } from "./config"
import { Alarm, ConfigUpdate, Downlink, ReadingBatch, decodeDownlink } from "./frames"
import { Uplink as UplinkField } from "./gen/wire"
import { SealKeys } from "./keys"
import { MqttLink } from "./mqtt"
import { Will } from "./mqtt-encode"
import { QoS } from "./mqtt-protocol"
import { Totals } from "./queue-slot"
import { Sampler } from "./sampler"
import { MeterStore, QUEUE_SLOTS } from "./store"
import { downFilter, upTopic } from "./topics"
import { UpdateWindow, windowRefusal } from "./update-window"

/** An unacknowledged frame goes again after this long. */
const RESEND_MS = 8000
/** Frames in flight (sent, not yet acknowledged) at most. */
const WINDOW = 4
const PUMP_EVERY_MS = 250
const KEEP_ALIVE_S = 30

/**
 * Downlinks are counted, not logged one by one: a flood must cost no more than its bytes (a
 * meter survives a flood of hostile downlinks). The counts are logged with the next frame.
 */
class DownlinkCounts {
    acks = 0
    /** Acks for no queued frame. */
    ignored = 0
    bad = 0
    time = 0
    resend = 0
    /** Unsealed, forged or replayed downlinks to a sealed meter. */
    refused = 0

    any(): boolean {
        return this.ignored + this.bad + this.time + this.resend + this.refused > 0
    }
}

export class MeterUplink {
    /** proto Uplink.seq of the newest frame queued. */
    private seq = 0
    /** Birth sent on this connection. */
    private born = false
    /** The channels the last birth announced: sensors bind a little after start, and a birth follows them. */
    private bornChannels = ""
    /** No readings frame queued yet in this boot. */
    private firstReadings = true
    /** The store's refused writes the last birth announced. */
    private bornUnstored = 0
    /**
     * proto Uplink.link: connection × 256 + birth number on that connection. The will (death) takes
     * connection × 256, each birth the next number, so no birth or death of a boot shares a nonce,
     * also when a config or a newly bound sensor makes the meter announce itself again.
     */
    private connection = 0
    private link = 0
    private rx = new DownlinkCounts()
    private pumping = false
    /** A Config downlink, applied at the next frame boundary (pendingConfig, configApplied). */
    private config: ConfigUpdate | undefined = undefined
    readonly mqtt: MqttLink
    /** The maintenance window of a fleet update (a sealed UpdateWindow downlink). */
    readonly window: UpdateWindow

    constructor(
        private readonly cfg: MeterConfig,
        readonly boot: number,
        private readonly keys: SealKeys,
        private readonly store: MeterStore,
        private readonly sampler: Sampler,
        private readonly clock: Clock,
    ) {
        // the last will is a death frame (proto: Death) of this boot and connection (onBeforeConnect)
        const will: Will = {
            topic: upTopic(cfg.meterId, "death"),
            payload: keys.encode({ boot, death: {} }),
            qos: QoS.AT_LEAST_ONCE,
        }
        this.mqtt = new MqttLink({
            host: cfg.mqttHost,
            port: cfg.mqttPort,
            proto: cfg.mqttProto,
            username: cfg.mqttUser.length ? cfg.mqttUser : undefined,
            password: cfg.mqttPass.length ? cfg.mqttPass : undefined,
            clientId: cfg.meterId,
            keepAliveS: KEEP_ALIVE_S,
            will,
        })
        this.window = new UpdateWindow(this.mqtt)
        // DeviceScript: an arrow function cannot use `this`; its callbacks close over `self`
        const self = this
        this.mqtt.onBeforeConnect = () => {
            self.connection = self.connection + 1
            self.link = self.connection * 256
            will.payload = self.keys.encode({ boot: self.boot, link: self.link, death: {} })
        }
        this.mqtt.onConnect = () => {
            console.log("citymeter: connected")
            self.born = false
            for (const f of self.store.frames) f.sentAt = 0 // a new session: everything unacked goes again
        }
        this.mqtt.onMessage = (topic: string, payload: Buffer) => {
            try {
                const inner = self.keys.open(topic, decodeDownlink(payload))
                if (inner) self.onDownlink(inner)
                else self.rx.refused++
            } catch {
                self.rx.bad++
            }
        }
    }

    /** Connects, reads and reconnects forever, and sends queued frames, in the background. */
    start() {
        this.mqtt.subscribe(downFilter(this.cfg.meterId))
        const self = this
        setTimeout(async () => {
            // the runtime's own cloud link disarmed before the first connect: a window cut short by a
            // power cut or a deploy left it armed, and armed it breaks MQTT (update-window.ts says
            // why this does not wait for a hash check). In this fiber, not at the top of main: a
            // runtime without the service costs its wait here, not the drivers' start.
            try {
                const disarmed = await self.window.disarm()
                console.log(`citymeter: runtime cloud link ${disarmed ? "disarmed" : "not found"}`)
            } catch {
                console.log("citymeter: runtime cloud link: disarming failed")
            }
            await self.mqtt.run()
        }, 0)
        setInterval(async () => {
            if (self.pumping) return
            self.pumping = true
            try {
                await self.pump()
            } catch {
                console.log(`citymeter: send failed`)
            }
            self.pumping = false
        }, PUMP_EVERY_MS)
    }

    connected(): boolean {
        return this.mqtt.connected
    }

    /** Makes the next pump send a birth first (it confirms a configuration or a key). */
    rebirth() {
        this.born = false
    }

    /** The Config downlink waiting for the next frame boundary, if any. */
    pendingConfig(): ConfigUpdate | undefined {
        return this.config
    }

    /** The pending config was applied (or refused): the next birth confirms what is in force. */
    configApplied() {
        this.config = undefined
        this.born = false
    }

    /** Queues an alarm edge as a frame of its own. */
    async queueAlarm(alarm: Alarm) {
        this.seq = this.seq + 1
        const seq = this.seq
        const boot = this.boot
        console.log(`citymeter: alarm ${alarm.type} ${alarm.active ? "raised" : "cleared"} boot=${boot} seq=${seq}`)
        const frame = this.keys.encode({ boot, seq, alarm })
        await this.store.push(frame, { boot, seq, body: UplinkField.alarm }, this.keys.sealed())
    }

    /**
     * Queues a batch of `intervals` readings. `totals` (the ones the batch carries) are saved with
     * the frame, never ahead of it: after a power cut the first interval of the next boot gets
     * everything since this frame.
     */
    async queueReadings(readings: ReadingBatch, intervals: number, totals: Totals) {
        this.seq = this.seq + 1
        const seq = this.seq
        const boot = this.boot
        // made while the uplink is down: it will arrive late, from the queue
        readings.replayed = !this.connected()
        // the boot's first frame: the pulse counters started from zero with the meter, so what they
        // would have counted while it was off or restarting is missing (issue 20)
        readings.afterReboot = this.firstReadings
        this.firstReadings = false
        const frame = this.keys.encode({ boot, seq, readings })
        await this.store.push(frame, { boot, seq, body: UplinkField.readings }, this.keys.sealed(), totals)
        // logged once in flash: a power cut before this line leaves no frame, and its consumption
        // goes to the next boot's first interval (tests count the frames made by this line)
        console.log(`citymeter: frame boot=${boot} seq=${seq} n=${intervals}`)
        this.logCounts()
    }

    private channelsChanged(): boolean {
        return channelsOf(this.sampler.capabilities(this.cfg.t.intervalS)).join(",") !== this.bornChannels
    }

    private async sendBirth() {
        // a new number for every birth; 255 births on one connection are followed by a reconnect's
        if (this.link - this.connection * 256 < 255) this.link = this.link + 1
        const cfg = this.cfg
        const sampler = this.sampler
        const caps = sampler.capabilities(cfg.t.intervalS)
        this.bornChannels = channelsOf(caps).join(",")
        this.bornUnstored = this.store.unstored
        const birth = this.keys.encode({
            boot: this.boot,
            seq: this.seq,
            link: this.link,
            birth: {
                firmware: FIRMWARE_VERSION,
                board: cfg.board,
                intervalS: cfg.t.intervalS,
                batch: cfg.t.batch,
                waterTotalMl: Math.max(0, sampler.water.total),
                energyTotalWh: Math.max(0, sampler.energy.total),
                queued: this.store.queuedCount(),
                dropped: this.store.state.dropped,
                uptimeS: Math.floor(ds.millis() / 1000),
                config: cfg.t,
                keyId: this.keys.keyId(),
                channels: channelsOf(caps),
                alarmRules: alarmRulesOf(caps),
                unstored: this.store.unstored,
            },
        })
        if (await this.mqtt.publish(upTopic(cfg.meterId, "birth"), birth, QoS.AT_LEAST_ONCE)) this.born = true
    }

    /** Sends queued frames oldest first, at most WINDOW unacknowledged in flight; resends stale ones. */
    private async pump() {
        if (!this.connected()) return
        if (this.born && this.channelsChanged()) this.born = false
        // a write the flash store refused is announced at once: those frames live in RAM only
        if (this.born && this.store.unstored !== this.bornUnstored) this.born = false
        if (!this.born) await this.sendBirth()
        if (!this.born) return
        const now = ds.millis()
        let inflight = 0
        // a snapshot: acks arriving during the awaits below shift store.frames
        const frames = this.store.frames.slice(0)
        for (const f of frames) {
            if (f.acked) continue
            if (f.sentAt !== 0 && now - f.sentAt < RESEND_MS) {
                inflight++
                continue
            }
            if (inflight >= WINDOW) break
            const topic = upTopic(this.cfg.meterId, f.body === UplinkField.alarm ? "alarm" : "readings")
            if (!(await this.mqtt.publish(topic, f.frame, QoS.AT_LEAST_ONCE))) return
            f.sentAt = ds.millis()
            inflight++
        }
    }

    private onDownlink(d: Downlink) {
        const rx = this.rx
        if (d.ack) {
            rx.acks++
            if (!this.store.ack(d.ack.boot, d.ack.seq)) rx.ignored++
        } else if (d.time) {
            // an answer to a birth echoes our uptime (0: pushed time)
            this.clock.sync(d.time.unixMs, d.time.uptimeS)
            rx.time++
        } else if (d.config) {
            if (d.config.sealKey) {
                const next: Buffer = d.config.sealKey
                const self = this
                setTimeout(async () => {
                    // a birth sealed under the new key confirms it (Birth.key_id)
                    if (await self.keys.rotate(next)) self.born = false
                }, 0)
                return
            }
            this.config = d.config // applied at the next frame boundary
        } else if (d.resend) {
            rx.resend++
            for (const f of this.store.frames) if (f.boot === d.resend.boot && f.seq >= d.resend.fromSeq) f.sentAt = 0
        } else if (d.update) {
            // only ever sealed and fresh (keys.ts): logged, a flood of them cannot reach here
            const u = d.update
            const t = this.cfg.t
            const why = this.window.busy
                ? "a window is open"
                : windowRefusal(u.conn, u.windowS, t.intervalS * t.batch, QUEUE_SLOTS - this.store.queuedCount())
            if (why.length) console.log(`citymeter: update window refused: ${why}`)
            else this.window.open(u.conn, u.windowS)
        }
    }

    /** Logs and resets the downlink and MQTT counts, when there is anything to say. */
    private logCounts() {
        const rx = this.rx
        const mqtt = this.mqtt
        if (!rx.any() && !mqtt.skipped && !mqtt.sendRetries) return
        // two lines: DeviceScript's compiler takes at most 7 substitutions in a template
        console.log(
            `citymeter: downlinks: ${rx.acks} acks (ignored ${rx.ignored} acks for no queued frame), ${rx.bad} bad, ${rx.time} time, ${rx.resend} resend`,
        )
        if (rx.refused) console.log(`citymeter: downlinks refused (unsealed, forged or replayed): ${rx.refused}`)
        console.log(
            `citymeter: mqtt: ${mqtt.skipped} packets skipped, ${mqtt.sendRetries} send retries, ${mqtt.sendFailures} sends failed`,
        )
        this.rx = new DownlinkCounts()
        mqtt.skipped = 0
        mqtt.sendRetries = 0
        mqtt.sendFailures = 0
    }
}
