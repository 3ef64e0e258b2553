// The meter loop: every tick it samples the sensors; at each interval's end it closes the interval
// and evaluates the alarm rules; every BATCH intervals it queues a readings frame, and then applies
// a Config downlink that came meanwhile (tunables change only between frames).
import * as ds from "@devicescript/core"
import { AlarmRules } from "./alarms"
import { Clock } from "./clock"
import { MeterConfig, applyConfig } from "./config"
import { IntervalReading } from "./interval"
import { Sampler, toBatch } from "./sampler"
import { MeterUplink } from "./uplink"

export class MeterLoop {
    private rules = new AlarmRules()
    private intervalMs: number
    /** ds.millis() at the start of the batch being filled, and at the end of the current interval. */
    private batchStart: number
    private intervalEnd: number
    /** The closed intervals of the batch being filled, oldest first. */
    private intervals: IntervalReading[] = []
    private busy = false

    constructor(
        private readonly cfg: MeterConfig,
        private readonly sampler: Sampler,
        private readonly uplink: MeterUplink,
        private readonly clock: Clock,
    ) {
        this.intervalMs = cfg.t.intervalS * 1000
        this.batchStart = ds.millis()
        this.intervalEnd = this.batchStart + this.intervalMs
    }

    /** Samples in the background: four times an interval, between every 100 ms and every second. */
    start() {
        const self = this
        setInterval(
            async () => {
                if (self.busy) return
                self.busy = true
                try {
                    await self.tick()
                } catch {
                    console.log(`citymeter: sample failed`)
                }
                self.busy = false
            },
            Math.min(1000, Math.max(100, self.intervalMs / 4)),
        )
    }

    private async tick() {
        await this.sampler.sample()
        const now = ds.millis()
        if (now < this.intervalEnd) return
        const r = this.sampler.close()
        this.intervals.push(r)
        await this.checkAlarms(r, this.intervalEnd - this.intervalMs)
        if (this.intervals.length >= this.cfg.t.batch) {
            await this.closeBatch() // the frame's slot saves the totals with it
            this.batchStart = this.intervalEnd
            await this.applyPendingConfig()
        }
        this.intervalEnd = this.intervalEnd + this.intervalMs
    }

    /** Raises and clears alarms for the interval that started at `startMillis`; queued like frames. */
    private async checkAlarms(r: IntervalReading, startMillis: number) {
        const edges = this.rules.evaluate(r, this.sampler.capabilities(this.intervalMs / 1000), this.cfg.t)
        const t = this.clock.stamp(startMillis)
        for (const e of edges)
            await this.uplink.queueAlarm({
                type: e.type,
                active: e.active,
                timeS: t.s,
                timeSynced: t.synced,
                value: e.value,
            })
    }

    private async closeBatch() {
        const t = this.clock.stamp(this.batchStart)
        const readings = toBatch(this.intervals, t.s, t.synced, this.intervalMs / 1000, this.sampler)
        const n = this.intervals.length
        this.intervals = []
        await this.uplink.queueReadings(readings, n, this.sampler.totals())
    }

    private async applyPendingConfig() {
        const pending = this.uplink.pendingConfig()
        if (!pending) return
        const changed = await applyConfig(this.cfg.t, pending, this.cfg.board)
        this.intervalMs = this.cfg.t.intervalS * 1000
        // a refused config changes nothing (applyConfig logged why); the birth says so
        if (changed >= 0) console.log(`citymeter: config applied (${changed} changed)`)
        this.uplink.configApplied() // the next birth confirms the configuration now in force
    }
}
