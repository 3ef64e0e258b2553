// One simulator worker thread (sim/src/workers.ts): runs its share of the meters, each the real
// firmware in its own VM, and reports to the main thread.
import { monitorEventLoopDelay } from "node:perf_hooks"
import { parentPort, workerData } from "node:worker_threads"
import { driveDemo } from "./demo.js"
import { SimMeter } from "./meter.js"
import type { FromThread, ThreadData, ToThread } from "./workers.js"

const data = workerData as ThreadData
const port = parentPort!
const send = (m: FromThread) => port.postMessage(m)
const forward = data.forward === null ? undefined : new RegExp(data.forward)

const meters = data.meters.map(
  (o) =>
    new SimMeter({
      // the demo and fleets drive registers at 60x: pulses that fast are past the GPIO polling
      water: "register",
      ...o,
      log: (line) => {
        if (!forward || forward.test(line)) send({ t: "line", id: o.meterId, line })
      },
    }),
)
const stopDemo = data.demo ? driveDemo(meters) : undefined
const lag = monitorEventLoopDelay({ resolution: 10 })
lag.enable()

let stopping = false
port.on("message", async (m: ToThread) => {
  if (m.t === "stats") {
    const ms = (ns: number) => ns / 1e6
    send({
      t: "stats",
      meters: meters.filter((x) => x.running).length,
      lagP50Ms: ms(lag.percentile(50)),
      lagP99Ms: ms(lag.percentile(99)),
      lagMaxMs: ms(lag.max),
    })
    lag.reset()
  } else if (m.t === "stop") {
    stopping = true
    stopDemo?.()
    for (const x of meters) await x.stop()
    lag.disable()
    send({ t: "stopped" })
  }
})

// a few at a time: a start is mostly waiting for the VM's settings service and the deploy
let next = 0
await Promise.all(
  Array.from({ length: Math.min(data.startConcurrency, meters.length) }, async () => {
    while (next < meters.length && !stopping) {
      const meter = meters[next++]
      try {
        await meter.start()
        send({ t: "started", id: meter.meterId })
      } catch (e) {
        send({ t: "failed", id: meter.meterId, error: (e as Error).message })
      }
    }
  }),
)
