// The maintenance window of a fleet update (issue 23, docs/ota-spike.md). The DeviceScript runtime
// has one TCP socket, and its own cloud link (WSSK), which can deploy a program, needs it. On a
// sealed UpdateWindow downlink the meter ends its MQTT session and pauses its reconnects (frames
// made meanwhile wait in the flash queue), arms the link through the runtime's Cloud Configuration
// service (services/runtimecloudconfiguration.md), and after window_s disarms it and goes back to
// MQTT. A link left armed breaks MQTT about once a minute (its pings go into the MQTT stream, its
// watchdog closes the firmware's socket), so the firmware also disarms it at every boot before its
// first MQTT connect: a meter that lost power mid-window, or a freshly deployed program, comes back.
//
// Disarming at boot does not wait for a hash check. A program that boots is whole: the runtime
// marks a deployed image valid only at its last step (0x96), so a power cut mid-deploy leaves no
// program to run, nothing disarms, and the link comes back at boot for the endpoint to finish.
// The price: a new program disarms within its first seconds, so the endpoint cannot count on a
// 0x93 re-check after 0x96; the confirmation is the meter's next Birth (its firmware version) over
// MQTT. And a new program that cannot reach MQTT cannot be reached over WSSK either, until a
// fallback window exists (issue 23: not done).
import * as ds from "@devicescript/core"
import { MqttLink } from "./mqtt"

// The client of services/runtimecloudconfiguration.md, declared by hand: DeviceScript's compiler
// reads the spec (and compiles the calls below from it) but writes no declaration for this service
// class, which it keeps for the runtime (ignoreSpec: SRV_CLOUD_CONFIGURATION).
declare module "@devicescript/core" {
    class RuntimeCloudConfiguration extends Role {
        constructor(roleName?: string)
        /** connection_status: 1 connected, 2 disconnected, 3 connecting, 4 disconnecting. */
        readonly connectionStatus: Register<number>
        /** An empty string deletes the stored string, closes the link and stops its retries. */
        setConnectionString(connectionString: string): Promise<void>
    }
}

/**
 * proto UpdateWindow.conn at most, bytes: the runtime keeps it in the settings bank during the
 * window (wssk_connstr, in proto/tunables.json storage.runtimeValueMaxBytes).
 */
export const MAX_CONN_BYTES = 120
export const MIN_WINDOW_S = 10
export const MAX_WINDOW_S = 3600
/** Cloud Configuration connection_status: disconnected. */
const DISCONNECTED = 2
/** How long a window waits for the MQTT session to end, and disarming for the link to close. */
const MQTT_END_MS = 15000
const CLOSE_MS = 3000
/** How long the runtime's service may take to be bound at boot (a runtime without WSSK has none). */
const BIND_MS = 1500

/**
 * Why an update window would be refused, or "" to open it. `frameS`: seconds per frame (interval x
 * batch); `freeSlots`: the flash queue's free slots. The frames made during the window must fit
 * them with one to spare (an alarm edge), so that the queue drops none.
 */
export function windowRefusal(conn: string, windowS: number, frameS: number, freeSlots: number): string {
    if (Buffer.from(conn).length > MAX_CONN_BYTES) return `connection string over ${MAX_CONN_BYTES} B`
    if (conn.indexOf("ws://") !== 0 || conn.indexOf("@") < 0) return "not a ws:// connection string"
    if (windowS < MIN_WINDOW_S || windowS > MAX_WINDOW_S)
        return `window of ${windowS} s outside ${MIN_WINDOW_S}-${MAX_WINDOW_S} s`
    const frames = Math.ceil(windowS / frameS) + 1
    if (frames > freeSlots - 1) return `window of ${windowS} s makes ${frames} frames, ${freeSlots} slots free`
    return ""
}

export class UpdateWindow {
    private readonly cloud = new ds.RuntimeCloudConfiguration()
    /** A window is opening, open or closing. */
    busy = false

    constructor(private readonly mqtt: MqttLink) {}

    private async bound(): Promise<boolean> {
        for (let t = 0; !this.cloud.isBound && t < BIND_MS; t += 50) await ds.sleep(50)
        return this.cloud.isBound
    }

    /**
     * Disarms the link: an empty connection string (the runtime deletes wssk_connstr, closes the
     * link and stops retrying), then its status, read until disconnected. The service handles
     * packets in order, so the read answers after the command. False without the service.
     */
    async disarm(): Promise<boolean> {
        if (!(await this.bound())) return false
        await this.cloud.setConnectionString("")
        for (let t = 0; t < CLOSE_MS; t += 100) {
            if ((await this.cloud.connectionStatus.read()) === DISCONNECTED) break
            await ds.sleep(100)
        }
        return true
    }

    /** Opens a window of `windowS` seconds (windowRefusal passed) in the background. */
    open(conn: string, windowS: number) {
        this.busy = true
        const self = this
        setTimeout(async () => {
            try {
                await self.run(conn, windowS)
            } catch {
                console.log("citymeter: update window failed")
            }
            try {
                await self.disarm() // before MQTT, whatever happened
            } catch {
                console.log("citymeter: update window: disarming failed")
            }
            self.mqtt.resume()
            self.busy = false
            console.log("citymeter: update window closed, back to MQTT")
        }, 0)
    }

    private async run(conn: string, windowS: number) {
        console.log(`citymeter: update window of ${windowS} s: leaving MQTT`)
        this.mqtt.hold()
        for (let t = 0; !this.mqtt.idle() && t < MQTT_END_MS; t += 50) await ds.sleep(50)
        if (!this.mqtt.idle() || !(await this.bound())) {
            console.log("citymeter: update window: no socket for the runtime's link")
            return
        }
        await this.cloud.setConnectionString(conn) // never logged: it holds the link's key
        console.log("citymeter: update window open, the runtime's link armed")
        await ds.sleep(windowS * 1000)
    }
}
