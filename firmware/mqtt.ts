// The meter's MQTT 3.1.1 connection on @devicescript/net sockets: one socket, one reader loop,
// reconnects with backoff. Packets are built in mqtt-encode.ts and parsed in mqtt-decode.ts.
//
// Why not @devicescript/net's MQTTClient: it reads one socket chunk per `onmessage` event, and
// events that arrive while a handler runs are coalesced, so incoming packets pile up and are read
// one per later event (seen here: acks arriving 8+ s late, one per publish); QoS 1 publishes all
// use packet id 1 and PUBACK is only logged; the will must be a string. End-to-end delivery is
// still our own Ack (proto: Ack).
//
// Bounded under a flood of downlinks (a broken or hostile bridge must not take the meter down). The VM panics with 60001 (DEVS_PANIC_TIMEOUT, "InfiniteLoop")
// when a fiber runs 128 K instructions without yielding (runtime/devicescript/vm_main.c), and
// Socket.recv() returns queued chunks without yielding: a reader that handled every queued packet
// in one go took the meter down under 20,000 acks. This reader yields every YIELD_EVERY packets,
// holds at most one packet of at most maxPacket bytes and skips larger ones unread. It never
// sleeps while data may be arriving (the runtime keeps reading the socket into the VM's 64 KB heap
// meanwhile: panic 60004, OutOfMemory): its PUBACKs go out in one write per batch, a batch refused
// by a full send queue waits for the next one, and only MAX_PENDING_ACKS owed ends the session.
//
// Refusals and restarts: a SUBACK refusal (0x80) is logged and the SUBSCRIBE retried; reconnects back off
// exponentially with full jitter, starting over after a good session, so meters dropped together
// (a broker restart) do not come back together; a publish refused by a full send queue is retried
// a bounded number of times and then reported as not sent (the frame stays queued), never thrown.
// hold() ends the session with a DISCONNECT and opens no socket until resume(): the runtime has one
// TCP socket, which an update window lends to its own cloud link (update-window.ts).
import * as ds from "@devicescript/core"
import { connect } from "@devicescript/net"
import { Framer, parseConnack, parsePublish, parseSuback, publishId } from "./mqtt-decode"
import {
    Will,
    encodeConnect,
    encodeDisconnect,
    encodePingreq,
    encodePubacks,
    encodePublish,
    encodeSubscribe,
} from "./mqtt-encode"
import { ConnectReturnCode, PacketType, QoS, SUBACK_FAILURE } from "./mqtt-protocol"

/** The socket as the link uses it: @devicescript/net's Socket, or a fake in tests. */
export interface MqttSocket {
    /** Throws when the write is refused ("send error -1": the send queue is full). */
    send(b: Buffer): Promise<void>
    /** A chunk; undefined on timeout; null once closed. */
    recv(timeoutMs: number): Promise<Buffer | null | undefined>
    close(): Promise<void>
}

/** Timings, each with its default. */
export interface MqttTiming {
    /** Largest packet taken; a larger one is skipped as it arrives. 1024 B (downlinks are under 100 B). */
    maxPacket: number
    /** Reconnect delay: minMs plus uniform jitter up to a cap doubling from baseMs to maxMs. 250 ms. */
    backoffMinMs: number
    /** 2000 ms: after a good session, meters dropped together come back over 2 s, then 4, 8... */
    backoffBaseMs: number
    /** 30000 ms. */
    backoffMaxMs: number
    /** A session accepted and up this long was good: the backoff starts over. 30000 ms. */
    goodSessionMs: number
    /** A refused or unanswered SUBSCRIBE goes again after this, doubling up to 60 s. 5000 ms. */
    subscribeRetryMs: number
    /** Tries of a publish while the send queue is full, pausing 20, 40, ... ms between. 8. */
    sendTries: number
}

export const DEFAULT_TIMING: MqttTiming = {
    maxPacket: 1024,
    backoffMinMs: 250,
    backoffBaseMs: 2000,
    backoffMaxMs: 30000,
    goodSessionMs: 30000,
    subscribeRetryMs: 5000,
    sendTries: 8,
}

export interface MqttOptions {
    host: string
    port: number
    proto: "tcp" | "tls"
    clientId: string
    username?: string
    password?: string
    keepAliveS: number
    will?: Will
    /** Overrides of DEFAULT_TIMING. */
    timing?: Partial<MqttTiming>
    /** Opens the socket; default: @devicescript/net connect(). */
    open?: (o: MqttOptions) => Promise<MqttSocket>
    /** Jitter source, uniform in [0, 1); default Math.random. */
    random?: () => number
}

/** Packets handled between two yields of the reader (a packet costs well under 2 K instructions). */
const YIELD_EVERY = 16
const SUBSCRIBE_MAX_MS = 60000
/** How many unanswered SUBSCRIBEs a SUBACK may answer (retries double from subscribeRetryMs, so few are ever out). */
const SUB_IDS_KEPT = 4
const SEND_PAUSE_MS = 20
/** PUBACKs owed before the session is given up (the broker would stop at its in-flight limit anyway). */
export const MAX_PENDING_ACKS = 256

/**
 * Reconnect delay: exponential backoff with full jitter (uniform in [minMs, minMs + cap], cap
 * doubling from baseMs to maxMs), so that meters dropped together do not come back together.
 * `attempt` counts failed sessions since the last good one; `rand` is uniform in [0, 1).
 */
export function backoffMs(attempt: number, rand: number, minMs: number, baseMs: number, maxMs: number): number {
    const cap = Math.min(maxMs, baseMs * Math.pow(2, Math.min(attempt, 20)))
    return minMs + Math.floor(rand * cap)
}

/**
 * @devicescript/net's Socket.send() throws `send error -1` when the runtime refuses the write:
 * on ESP32 when its send queue is full (main/sock.c jd_tcpsock_write). Worth retrying.
 */
function queueFull(e: Error): boolean {
    const m: string = e && e.message ? e.message : ""
    return m.indexOf("send error -1") >= 0
}

async function openSocket(o: MqttOptions): Promise<MqttSocket> {
    return await connect({ host: o.host, port: o.port, proto: o.proto, timeout: 10000 })
}

export class MqttLink {
    /** CONNACK accepted on the current socket. */
    connected = false
    /** The broker granted every subscription of this session (SUBACK). */
    subscribed = false
    /** Writes retried because the send queue was full, and writes given up. */
    sendRetries = 0
    sendFailures = 0
    /** Packets skipped for being over maxPacket. */
    skipped = 0
    readonly timing: MqttTiming
    private sock: MqttSocket | null = null
    /** A socket is being opened (not yet in `sock`). */
    private opening = false
    /** hold(): no session until resume(). */
    private held = false
    private framer: Framer
    private nextId = 1
    private lastTx = 0
    private lastRx = 0
    private acceptedAt = 0
    private handled = 0
    private subscriptions: string[] = []
    /**
     * Packet identifiers of this session's unanswered SUBSCRIBEs, newest last (at most SUB_IDS_KEPT).
     * Each carries the same filters, so a SUBACK to any of them answers the subscription: a retry sent
     * before a slow broker's SUBACK arrived must not make that SUBACK be ignored.
     */
    private subIds: number[] = []
    private subDueAt = 0
    private subRetryMs = 0
    /** Packet identifiers of received QoS 1 PUBLISHes not yet acknowledged. */
    private acks: number[] = []
    /** Called for every PUBLISH received. */
    onMessage: ((topic: string, payload: Buffer) => void) | null = null
    /** Called once per accepted connection, after subscriptions were sent. */
    onConnect: (() => void) | null = null
    /** Called before each CONNECT is sent: the last chance to change opts.will. */
    onBeforeConnect: (() => void) | null = null

    constructor(readonly opts: MqttOptions) {
        const t: Record<string, number> = {}
        const over = (opts.timing || {}) as Record<string, number>
        const defaults = DEFAULT_TIMING as unknown as Record<string, number>
        for (const k of Object.keys(DEFAULT_TIMING)) t[k] = over[k] !== undefined ? over[k] : defaults[k]
        this.timing = t as unknown as MqttTiming
        this.framer = new Framer(this.timing.maxPacket)
    }

    subscribe(filter: string) {
        this.subscriptions.push(filter)
    }

    /**
     * Ends the session (PUBACKs owed, then DISCONNECT, within a second) and opens no socket until
     * resume(). idle() says when the socket is closed.
     */
    hold() {
        this.held = true
    }

    resume() {
        this.held = false
    }

    /** No socket open nor being opened. */
    idle(): boolean {
        return !this.sock && !this.opening
    }

    /** Connects and reconnects forever; never throws. */
    async run() {
        const t = this.timing
        let failed = 0
        while (true) {
            if (this.held) {
                await ds.sleep(250)
                continue
            }
            try {
                await this.session()
            } catch (e) {
                console.log(`mqtt: ${(e as Error).message}`)
            }
            const good = this.acceptedAt > 0 && ds.millis() - this.acceptedAt >= t.goodSessionMs
            await this.drop()
            if (this.held) {
                failed = 0 // a session given up on purpose: back at once after resume()
                continue
            }
            failed = good ? 0 : failed + 1
            const rand = this.opts.random ? this.opts.random() : Math.random()
            const delay = backoffMs(failed, rand, t.backoffMinMs, t.backoffBaseMs, t.backoffMaxMs)
            console.log(`mqtt: reconnecting in ${delay} ms`)
            await ds.sleep(delay)
        }
    }

    private async drop() {
        this.connected = false
        this.subscribed = false
        this.acceptedAt = 0
        const s = this.sock
        this.sock = null
        if (s) await s.close()
    }

    /**
     * One write per call (packets never interleave). A write refused because the send queue is
     * full is tried again up to `tries` times, pausing between: the reader passes 1 (it must not
     * sleep), publishers timing.sendTries.
     */
    private async send(b: Buffer, tries: number): Promise<boolean> {
        for (let i = 0; i < tries; ++i) {
            const s = this.sock
            if (!s) return false
            try {
                await s.send(b)
                this.lastTx = ds.millis()
                return true
            } catch (e) {
                if (!queueFull(e as Error)) return false
                this.sendRetries++
                if (i + 1 < tries) await ds.sleep(SEND_PAUSE_MS * (i + 1))
            }
        }
        this.sendFailures++
        return false
    }

    /** Sends the PUBACKs owed in one write [MQTT-4.3.2-2]; they wait for the next call if refused. */
    private async flushAcks() {
        const n = this.acks.length
        if (n === 0) return
        if (await this.send(encodePubacks(this.acks), 1)) this.acks = []
        else if (n >= MAX_PENDING_ACKS) throw new Error(`${n} PUBACKs could not be sent`)
    }

    /** Packet identifiers are non-zero [MQTT-2.3.1-1]. */
    private id(): number {
        const id = this.nextId
        this.nextId = id >= 65535 ? 1 : id + 1
        return id
    }

    private async session() {
        const o = this.opts
        this.framer = new Framer(this.timing.maxPacket)
        this.subIds = []
        this.acks = []
        this.opening = true
        let sock: MqttSocket
        try {
            sock = await (o.open || openSocket)(o)
        } finally {
            this.opening = false
        }
        this.sock = sock
        this.lastRx = ds.millis()
        // the will may differ per connection (a sealed death carries its connection number)
        if (this.onBeforeConnect) this.onBeforeConnect()
        if (!(await this.send(encodeConnect(o), this.timing.sendTries))) throw new Error("CONNECT not sent")
        while (true) {
            // PUBACKs refused by a full send queue go again soon
            const chunk = await sock.recv(this.acks.length ? SEND_PAUSE_MS : 1000)
            if (chunk === null) throw new Error("connection closed")
            if (chunk) {
                this.lastRx = ds.millis()
                this.framer.push(chunk)
                await this.drain()
            }
            await this.flushAcks()
            if (this.held) {
                // held while a DISCONNECT ends the session: the broker drops the will [MQTT-3.14.4-3]
                await this.send(encodeDisconnect(), 1)
                return
            }
            // keep alive [MQTT-3.1.2-24]: ping when idle for half the period, give up at 1.5 periods
            const ka = o.keepAliveS * 1000
            if (ds.millis() - this.lastRx > ka * 1.5) throw new Error("keep-alive timeout")
            if (this.connected && ds.millis() - this.lastTx > ka / 2) await this.send(encodePingreq(), 1)
            if (this.connected && !this.subscribed && ds.millis() >= this.subDueAt) {
                if (this.subIds.length) {
                    console.log(`mqtt: no SUBACK; subscribing again`)
                    this.subRetryMs = Math.min(this.subRetryMs * 2, SUBSCRIBE_MAX_MS)
                }
                await this.sendSubscribe()
            }
        }
    }

    /** Handles every complete packet received, yielding every YIELD_EVERY packets. */
    private async drain() {
        while (true) {
            const p = this.framer.next()
            if (!p) return
            if (p.body) await this.handle(p.type, p.flags, p.body)
            else this.skip(p.type, p.flags, p.length, p.head)
            this.handled++
            if (this.handled % YIELD_EVERY === 0) {
                await this.flushAcks()
                // sleep(0) lets due timers (the sampler) run and resumes in the same pass of the VM
                await ds.sleep(0)
            }
        }
    }

    /** A packet over maxPacket: its bytes are dropped as they arrive; a QoS 1 PUBLISH is still acknowledged. */
    private skip(type: number, flags: number, length: number, head: Buffer) {
        this.skipped++
        console.log(`mqtt: skipped a packet of type ${type} and ${length} B (limit ${this.timing.maxPacket} B)`)
        if (type !== PacketType.PUBLISH) return
        const id = publishId(flags, head)
        if (id > 0) this.acks.push(id)
    }

    private async sendSubscribe() {
        if (!this.subscriptions.length) {
            this.subscribed = true
            return
        }
        const id = this.id()
        this.subIds.push(id)
        if (this.subIds.length > SUB_IDS_KEPT) this.subIds.shift()
        // sent again when refused or unanswered within the retry period
        this.subDueAt = ds.millis() + this.subRetryMs
        await this.send(encodeSubscribe(id, this.subscriptions, QoS.AT_LEAST_ONCE), 1)
    }

    private async handle(type: number, flags: number, body: Buffer) {
        if (type === PacketType.PUBLISH) {
            const m = parsePublish(flags, body)
            // QoS 1 [MQTT-4.3.2-2]: PUBACK with the same packet identifier, batched
            if (m.qos > QoS.AT_MOST_ONCE) this.acks.push(m.id)
            if (this.onMessage) this.onMessage(m.topic, m.payload)
        } else if (type === PacketType.CONNACK) {
            const c = parseConnack(body)
            if (c.returnCode !== ConnectReturnCode.ACCEPTED) throw new Error(`connection refused, code ${c.returnCode}`)
            this.connected = true
            this.acceptedAt = ds.millis()
            this.subRetryMs = this.timing.subscribeRetryMs
            await this.sendSubscribe()
            if (this.onConnect) this.onConnect()
        } else if (type === PacketType.SUBACK) {
            const s = parseSuback(body)
            if (this.subIds.indexOf(s.id) < 0) return
            this.subIds = []
            let refused = 0
            for (const c of s.codes) if (c === SUBACK_FAILURE) refused++
            if (refused === 0) {
                this.subscribed = true
                return
            }
            // 3.9.3: 0x80 is a refusal (e.g. the broker's ACL); without the subscription no downlink arrives
            console.log(`mqtt: subscription refused (SUBACK 0x80); retrying in ${this.subRetryMs} ms`)
            this.subDueAt = ds.millis() + this.subRetryMs
            this.subRetryMs = Math.min(this.subRetryMs * 2, SUBSCRIBE_MAX_MS)
        }
        // PUBACK, PINGRESP: nothing to do (delivery is confirmed end to end)
    }

    /** Publishes; false when not connected or the write failed (the caller keeps the frame). */
    async publish(topic: string, payload: Buffer, qos: number): Promise<boolean> {
        if (!this.connected) return false
        const b = encodePublish(topic, payload, qos, qos > QoS.AT_MOST_ONCE ? this.id() : 0)
        return await this.send(b, this.timing.sendTries)
    }
}
