// citymeter benchmarks: `npm run bench` (full), `npm run bench -- --quick` (CI smoke, a few seconds),
// `--only frames|ingest|fleet|firmware|sim|dashboard|sta|compiled`. Every benchmark prints its baseline and the ratio to it, both
// measured in the same run on the same machine.
import { arch, cpus, totalmem } from "node:os"
import { compiledBench } from "./compiled.js"
import { dashboardBench } from "./dashboard.js"
import { frameSizeBench, sealCostBench } from "./frames.js"
import { fleetBench } from "./fleet.js"
import { ingestBench } from "./ingest.js"
import { firmwareBench } from "./firmware.js"
import { simBench } from "./sim.js"
import { staBench } from "./sta.js"

const args = process.argv.slice(2)
const quick = args.includes("--quick")
const only = args.includes("--only") ? args[args.indexOf("--only") + 1] : undefined

console.log(
  `citymeter bench ${quick ? "(quick)" : "(full)"} ${new Date().toISOString()} — ${cpus().length} × ${cpus()[0]?.model ?? arch()}, ` +
    `${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.versions.node}`,
)
if (!only || only === "frames") {
  frameSizeBench()
  sealCostBench(quick)
}
if (!only || only === "ingest") await ingestBench(quick)
// full run only: a bridge process of its own and 100k meters (quick mode stays short for CI)
if ((!only && !quick) || only === "fleet") await fleetBench(quick)
if (!only || only === "firmware") await firmwareBench(quick)
if (!only || only === "firmware" || only === "sim") await simBench(quick)
if (!only || only === "sta") await staBench(quick)
if (!only || only === "compiled") await compiledBench(quick)
// full run only (a browser): the dashboard's first load with 10,000 meters
if ((!only && !quick) || only === "dashboard") await dashboardBench(quick)
// VM hosts and sockets may keep the event loop alive
process.exit(0)
