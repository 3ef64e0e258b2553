// citymeter firmware: sensors → sampler → interval batches → protobuf frames → flash queue → MQTT.
// This file puts the parts together; each concern has its module:
//   meter.ts   the meter loop: sampling, intervals, alarms, batches, config at frame boundaries
//   uplink.ts  frame numbers, births, the pump of queued frames, downlinks (over mqtt.ts)
//   clock.ts   wall time from the bridge's TimeSync
//   keys.ts    sealing (seal.ts) with the meter's key, and key rotation
//   store.ts   the frame queue in flash, with the totals (its slots: queue-slot.ts)
//   flash-records.ts  the other records in flash: boot counter, sealing key, downlink mark
//   update-window.ts  a fleet update's maintenance window: MQTT held, the runtime's own link armed
import * as ds from "@devicescript/core"
import { Clock } from "./clock"
import { loadConfig } from "./config"
import { nextBoot } from "./flash-records"
import { loadSealKeys } from "./keys"
import { MeterLoop } from "./meter"
import { Sampler } from "./sampler"
import { MeterStore, QUEUE_SLOTS } from "./store"
import { MeterUplink } from "./uplink"

const cfg = await loadConfig()
const boot = await nextBoot()
const keys = await loadSealKeys()
const store = new MeterStore()
await store.load()
console.log(
    `citymeter: meter ${cfg.meterId} boot ${boot} interval ${cfg.t.intervalS}s x${cfg.t.batch}, ${store.queuedCount()} frames queued`,
)
console.log(`citymeter: frames ${keys.sealed() ? "sealed (key id " + keys.keyId() + ")" : "open (no SEAL_KEY)"}`)

const sampler = new Sampler(
    {
        flow: new ds.CitymeterWaterFlow(),
        electricity: new ds.CitymeterElectricityMeter(),
        pressure: new ds.CitymeterWaterPressure(),
        tamper: new ds.Button("tamper"),
        magnet: new ds.MagneticFieldLevel("magnet"),
    },
    store.savedTotals(),
)
const clock = new Clock()
const uplink = new MeterUplink(cfg, boot, keys, store, sampler, clock)
await sampler.sample() // first reads set the counters' baselines before anything is sent
uplink.start() // disarms the runtime's own cloud link before the first MQTT connect (update-window.ts)
new MeterLoop(cfg, sampler, uplink, clock).start()

console.log(`citymeter: queue ${QUEUE_SLOTS} frames`)
