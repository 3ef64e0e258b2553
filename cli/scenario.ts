// `citymeter sim --scenario <name>`: one scenario (sim/scenarios/<name>.ts) against the real
// firmware in the VM and a private in-process bridge (embedded broker, in-memory PGlite), then a
// verdict from what the bridge stored: every millilitre and watt-hour generated is in the stored
// totals, the stored totals chain without a gap, and the alarms the scenario's events stand for
// were raised and cleared, with no other alarm. Exit code 0 when it passes, 1 when not.
import mqtt from "mqtt"
import pino from "pino"
import { encodeDownlink } from "../bridge/src/codec/downlink.js"
import { startEmbeddedBroker, type EmbeddedBroker } from "../bridge/src/broker.js"
import { enumLabel } from "../bridge/src/routes/shared.js"
import { startService } from "../bridge/src/service.js"
import { downTopic } from "../bridge/src/topics.js"
import { SimMeter } from "../sim/src/meter.js"
import { runScenario, type Scenario, type ScenarioEvent } from "../sim/src/scenario.js"
import { scenarios } from "../sim/scenarios/index.js"
import { CliError, usage } from "./errors.js"
import type { Print } from "./build.js"

export const SCENARIO_NAMES = Object.keys(scenarios)

/** The alarm an event must raise (and clear when it ends); events without one must raise none. */
const EVENT_ALARM: Partial<Record<ScenarioEvent["kind"], string>> = {
  leak: "LEAK",
  burst: "BURST",
  backflow: "BACKFLOW",
  pressure: "PRESSURE_LOW",
  tamper: "TAMPER",
  magnet: "MAGNETIC_FIELD",
}

/** Alarms an event may raise besides its own: a burst's flow drags the line pressure down. */
const EVENT_SIDE_ALARMS: Partial<Record<ScenarioEvent["kind"], string[]>> = { burst: ["PRESSURE_LOW"] }

export function expectedAlarms(s: Scenario): string[] {
  return [...new Set(s.events.map((e) => EVENT_ALARM[e.kind]).filter((a): a is string => !!a))].sort()
}

export async function scenarioCommand(name: string, print: Print, verbose = false): Promise<boolean> {
  const s = (scenarios as Record<string, Scenario>)[name]
  if (!s) throw usage(`unknown scenario '${name}': one of ${SCENARIO_NAMES.join(", ")} (sim/scenarios/)`)
  print(`scenario ${s.name}: ${s.description} (${s.durationS} s real time, ${s.speed}x)`)
  // a broker of our own, so that a brokerOutage event can stop and start it
  let broker: EmbeddedBroker = await startEmbeddedBroker(0)
  const port = broker.port
  const svc = await startService({
    demo: true,
    mqttUrl: broker.url,
    databaseUrl: "pglite:memory",
    log: pino({ level: verbose ? "info" : "silent" }),
  })
  const ops = await mqtt.connectAsync(broker.url, { clientId: `citymeter-scenario-${process.pid}` })
  const meterId = `scenario-${s.name}`
  const meter = new SimMeter({
    water: "register", // a scenario's default (sim/src/scenario.ts Scenario.meter)
    ...s.meter,
    meterId,
    settings: { MQTT_HOST: "127.0.0.1", MQTT_PORT: port, ...s.settings },
    log: verbose ? (l) => print(`  ${meterId}: ${l}`) : undefined,
  })
  try {
    const r = await runScenario(s, meter, {
      stopBroker: async () => {
        print("  (broker stopped)")
        await broker.close()
      },
      startBroker: async () => {
        broker = await startEmbeddedBroker(port)
        print("  (broker back)")
      },
      sendTime: async (id, unixMs) => {
        await ops.publishAsync(downTopic(id, "time"), Buffer.from(encodeDownlink({ time: { unixMs } })), { qos: 1 })
      },
    })
    // the last frames may still be on their way: wait (at most 30 s) for the final totals
    const until = Date.now() + 30_000
    let rows = await svc.store.readings(meterId, { limit: 100_000 })
    const last = () => rows[rows.length - 1]
    while (!(last()?.waterTotalMl === r.waterMl && last()?.energyTotalWh === r.energyWh) && Date.now() < until) {
      await new Promise((res) => setTimeout(res, 250))
      rows = await svc.store.readings(meterId, { limit: 100_000 })
    }
    rows.sort((a, b) => a.boot - b.boot || a.seq - b.seq || a.idx - b.idx)
    const alarms = await svc.store.alarms({ meterId, limit: 100_000 })
    const checks: [boolean, string][] = []
    const stored = last()
    checks.push([
      stored?.waterTotalMl === r.waterMl && stored?.energyTotalWh === r.energyWh,
      `totals: simulator ${r.waterMl} mL, ${r.energyWh} Wh; stored ${stored?.waterTotalMl ?? "-"} mL, ${stored?.energyTotalWh ?? "-"} Wh (${rows.length} readings)`,
    ])
    const breaks = rows.filter((x, i) => i > 0 && x.waterTotalMl !== rows[i - 1].waterTotalMl! + x.volumeMl!).length
    checks.push([
      breaks === 0,
      `totals chain: ${breaks === 0 ? "every reading adds its volume" : `${breaks} break(s)`}`,
    ])
    const seen = new Map<string, boolean[]>()
    for (const a of alarms) seen.set(enumLabel(a.type), [...(seen.get(enumLabel(a.type)) ?? []), a.active])
    const want = expectedAlarms(s)
    for (const t of want) {
      const edges = seen.get(t) ?? []
      checks.push([
        edges.length >= 2 && edges[0] && !edges[edges.length - 1],
        `${t}: ${edges.map((x) => (x ? "raised" : "cleared")).join(", ") || "never raised"} (expected raised, then cleared)`,
      ])
    }
    const side = s.events.flatMap((e) => EVENT_SIDE_ALARMS[e.kind] ?? [])
    const also = [...seen.keys()].filter((t) => !want.includes(t) && side.includes(t))
    const extra = [...seen.keys()].filter((t) => !want.includes(t) && !side.includes(t))
    checks.push([
      extra.length === 0,
      `other alarms: ${extra.join(", ") || "none"}${also.length ? ` (${also.join(", ")} too, as the events' physics make it)` : ""}`,
    ])
    for (const [ok, line] of checks) print(`  ${ok ? "ok  " : "FAIL"} ${line}`)
    const pass = checks.every(([ok]) => ok)
    print(`verdict: ${pass ? "PASS" : "FAIL"} (${s.name})`)
    return pass
  } catch (e) {
    if (e instanceof CliError) throw e
    throw new CliError(`scenario ${s.name} did not run to its end: ${(e as Error).message}`)
  } finally {
    await meter.stop()
    await ops.endAsync()
    await svc.stop()
    await broker.close().catch(() => undefined)
  }
}
