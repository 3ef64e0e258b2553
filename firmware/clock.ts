// The meter's wall clock. DeviceScript has no Date and no NTP: ds.millis() counts from start, and
// Unix time comes only from the bridge (proto TimeSync downlink). Until the first one, timestamps
// are seconds since start and say they are not synced (proto ReadingBatch.time_synced).
import * as ds from "@devicescript/core"

export interface Stamp {
    /** Unix seconds once synced, else seconds since start. */
    s: number
    synced: boolean
}

export class Clock {
    /** Unix ms minus ds.millis(); undefined until the first TimeSync. */
    private offsetMs: number | undefined = undefined

    /** The time of `millis` (a ds.millis() reading). */
    stamp(millis: number): Stamp {
        if (this.offsetMs === undefined) return { s: Math.floor(millis / 1000), synced: false }
        return { s: Math.floor((millis + this.offsetMs) / 1000), synced: true }
    }

    /**
     * A TimeSync downlink: Unix ms at the bridge, and the uptime (s) it echoes when it answers a
     * birth (0 when it pushed the time): half the round trip since that birth is added.
     */
    sync(unixMs: number, echoedUptimeS: number) {
        const rttMs = echoedUptimeS > 0 ? Math.max(0, ds.millis() - echoedUptimeS * 1000) : 0
        if (this.offsetMs === undefined) console.log(`citymeter: time synced`)
        this.offsetMs = unixMs + rttMs / 2 - ds.millis()
    }
}
