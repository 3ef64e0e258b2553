// Config-time checks in the VM: the firmware refuses what its board's pulse inputs cannot count or
// a flash slot cannot hold, by the same rules as bridge/src/tunables.ts, and a Config downlink's
// pulse constants reach the running counters without a reboot.
import { describe, expect, test } from "@devicescript/test"
import { applyConfig, batchSlotError, defaultTunables, pulseConstantListeners, pulseLimitErrors } from "../config"
import { S0Counter } from "../drivers/electricity"
import { FlowCounter } from "../drivers/waterflow"
import { PULSE_CASES, TUNABLES, WORST_FRAME_BYTES } from "../gen/tunables"

describe("pulse limits", () => {
    test("the firmware refuses exactly what the Node side refuses (generated cases)", () => {
        for (const c of PULSE_CASES) {
            const t: any = defaultTunables()
            t.pulsesPerL = c.pulsesPerL
            t.maxFlowLmin = c.maxFlowLmin
            t.impPerKwh = c.impPerKwh
            t.maxPowerW = c.maxPowerW
            t.pulseMs = c.pulseMs
            expect(pulseLimitErrors(t, c.board).length).toBe(c.refusals)
        }
    })
    test("the defaults count: utility reed and S0 meters", () => {
        expect(pulseLimitErrors(defaultTunables(), "citymeter_picow").length).toBe(0)
        expect(pulseLimitErrors(defaultTunables(), "unknown").length).toBe(0)
    })
    test("a 450 pulses/L hall sensor at 30 L/min is refused with the reason", () => {
        const t: any = defaultTunables()
        t.pulsesPerL = 450
        t.maxFlowLmin = 30
        const why = pulseLimitErrors(t, "citymeter_esp32c3")
        expect(why.length).toBe(1)
        expect(why[0].indexOf("225 pulses/s") >= 0).toBe(true)
    })
})

describe("flash slot", () => {
    test("every BATCH up to the schema's max fits a slot, one more does not", () => {
        const max = WORST_FRAME_BYTES.length - 1
        let batch: any = undefined
        for (const u of TUNABLES) if (u.key === "BATCH") batch = u
        expect(batch.max).toBe(max)
        for (let b = 1; b <= max; b++) expect(batchSlotError(b)).toBe(undefined)
        expect(batchSlotError(max + 1) !== undefined).toBe(true)
    })
})

describe("config downlinks", () => {
    test("a refused downlink changes nothing", async () => {
        const t: any = defaultTunables()
        expect(await applyConfig(t, { batch: 9, leakS: 600 }, "citymeter_picow")).toBe(-1)
        expect(t.batch).toBe(4)
        expect(t.leakS).toBe(86400)
        // 20 pulses/L of 100 ms at the default 50 L/min is 16.7 pulses/s: at most 8.3 count
        expect(await applyConfig(t, { pulsesPerL: 20 }, "citymeter_picow")).toBe(-1)
        expect(t.pulsesPerL).toBe(1)
        // with a stated maximum flow it can count, the same constant is taken
        expect(await applyConfig(t, { pulsesPerL: 20, maxFlowLmin: 20 }, "citymeter_picow")).toBe(2)
        expect(t.pulsesPerL).toBe(20)
        expect(t.maxFlowLmin).toBe(20)
        // 30 ms S0 impulses at 72 kW and 1000 imp/kWh (20/s) count; under 20 ms they do not
        expect(await applyConfig(t, { pulseMs: 30, maxPowerW: 72000 }, "citymeter_picow")).toBe(2)
        expect(await applyConfig(t, { pulseMs: 19 }, "citymeter_picow")).toBe(-1)
    })
    test("pulse constants reach the running counters without a reboot", async () => {
        const t: any = defaultTunables()
        const flow = new FlowCounter(t.pulsesPerL)
        const s0 = new S0Counter(t.impPerKwh)
        pulseConstantListeners.push((n) => {
            flow.setPulsesPerL(n.pulsesPerL)
            s0.setImpPerKwh(n.impPerKwh)
        })
        flow.pulse()
        flow.pulse()
        expect(flow.volumeMl()).toBe(2000)
        expect(await applyConfig(t, { pulsesPerL: 4, maxFlowLmin: 60, impPerKwh: 500 }, "citymeter_esp32s3")).toBe(3)
        expect(flow.pulsesPerL).toBe(4)
        flow.pulse()
        // the two pulses before keep their litre each; the new one is a quarter litre
        expect(flow.volumeMl()).toBe(2250)
        expect(s0.impPerKwh).toBe(500)
    })
})
