// The periodic minimum night flow check (issue 25 item 3): for every DMA, its latest nights
// (store.dmaNightFlow), judged by the rules of dma/night-flow.ts, and the bridge alarms they call
// for written with Store.setBridgeAlarm — exactly once while open, also with several bridges
// checking. Runs in the ingest role beside the other periodic jobs (service.ts).
import type { Logger } from "pino"
import { startPeriodic } from "../periodic.js"
import type { Store } from "../store/store.js"
import { CUSTOMER_NIGHT_FLOW, dmaAlarmId, judgeCustomer, judgeDma, NIGHT_FLOW_RISE } from "./night-flow.js"

const DAY_MS = 86_400_000

export interface NightAlarmEdge {
  meterId: string
  type: string
  active: boolean
  value: number
  dmaId: string
  night: string
}

/** Checks every DMA's nights up to `now`; returns the alarm edges it wrote. */
export async function checkNightFlows(store: Store, now: Date): Promise<NightAlarmEdge[]> {
  const edges: NightAlarmEdge[] = []
  const open = new Set(
    (await store.alarms({ open: true, limit: 10_000_000 }))
      .filter((a) => a.type === CUSTOMER_NIGHT_FLOW)
      .map((a) => a.meterId),
  )
  for (const dma of await store.listDmas()) {
    const cfg = dma.nightFlow
    const nights = Math.max(cfg.baselineNights, cfg.customerNights) + 2
    const ans = await store.dmaNightFlow({
      dmaId: dma.dmaId,
      from: new Date(now.getTime() - nights * DAY_MS),
      to: now,
      window: cfg,
      meters: true,
    })
    const set = async (meterId: string, type: string, v: { active: boolean; value: number; night: string }) => {
      if (await store.setBridgeAlarm(meterId, type, v.active, v.value, now))
        edges.push({ meterId, type, active: v.active, value: v.value, dmaId: dma.dmaId, night: v.night })
    }
    const d = judgeDma(ans.dma, cfg)
    if (d) await set(dmaAlarmId(dma.dmaId), NIGHT_FLOW_RISE, d)
    const perMeter = new Map<string, typeof ans.meters>()
    for (const n of ans.meters) perMeter.set(n.meterId, [...(perMeter.get(n.meterId) ?? []), n])
    for (const [meterId, ns] of perMeter) {
      const v = judgeCustomer(ns, cfg)
      // a clear is written only where one is open: no transaction per quiet meter
      if (v && (v.active || open.has(meterId))) await set(meterId, CUSTOMER_NIGHT_FLOW, v)
    }
  }
  return edges
}

export interface NightFlowChecker {
  stop(): Promise<void>
}

/** Runs checkNightFlows every `everyMs` (a slow run is not piled up), logging each edge. */
export function startNightFlowChecker(o: { store: Store; log: Logger; everyMs: number }): NightFlowChecker {
  return startPeriodic(
    () =>
      checkNightFlows(o.store, new Date())
        .then((edges) => {
          for (const e of edges) o.log.warn(e, e.active ? "night flow alarm raised" : "night flow alarm cleared")
        })
        .catch((e: Error) => o.log.error({ err: e.message }, "night flow check failed")),
    o.everyMs,
  )
}
