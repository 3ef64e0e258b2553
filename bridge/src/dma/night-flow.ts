// Minimum night flow rules (issue 25 item 3), pure: a DMA's or a customer meter's nights →
// whether its alarm should be open. The periodic check (dma/night-check.ts) feeds them the nights
// the data tier computes (store/dma-balance.ts dmaNightFlow) and writes the edges.
//
// - NIGHT_FLOW_RISE (on `dma:<id>`): the DMA's minimum hourly system input in the night window of
//   its latest complete night rose above the baseline — the median of up to `baselineNights`
//   complete nights before it — by more than both `riseMlPerH` and `risePct` % of the baseline:
//   leak onset. It clears when a later night is back within them. Once a raised level has lasted
//   `baselineNights` nights it is the baseline (the alarm clears): acknowledge or repair before.
// - CUSTOMER_NIGHT_FLOW (on the customer meter): the meter's lowest hourly consumption in the
//   window was above zero in each of its latest `customerNights` complete nights: it never stopped,
//   a leak on the customer's side. It clears on the first complete night that reaches zero.
import type { DmaNight, MeterNight } from "../store/dma-balance.js"
import type { NightFlowConfig } from "../store/dmas.js"

export const NIGHT_FLOW_RISE = "NIGHT_FLOW_RISE"
export const CUSTOMER_NIGHT_FLOW = "CUSTOMER_NIGHT_FLOW"
/** Bridge alarms of a DMA carry this meter id prefix and its id (":" is in no meter id). */
export const dmaAlarmId = (dmaId: string) => `dma:${dmaId}`

/** What a rule says of the latest complete night: the alarm open or not, its value (mL/h). */
export interface NightVerdict {
  active: boolean
  /** mL/h: the DMA's minimum night input, or the customer meter's lowest night hour. */
  value: number
  night: string
  baseline?: number
}

type Rule = Pick<NightFlowConfig, "baselineNights" | "riseMlPerH" | "risePct" | "customerNights">

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2
}

const byNight = <T extends { night: string }>(a: T, b: T) => (a.night < b.night ? -1 : a.night > b.night ? 1 : 0)

/** The DMA's verdict; undefined until there is a complete night and one before it. */
export function judgeDma(nights: DmaNight[], r: Rule): NightVerdict | undefined {
  const done = nights.filter((n) => n.complete && n.minInputMlPerH !== null).sort(byNight)
  if (done.length < 2) return undefined
  const last = done[done.length - 1]
  const baseline = median(
    done
      .slice(0, -1)
      .slice(-r.baselineNights)
      .map((n) => n.minInputMlPerH!),
  )
  const rise = last.minInputMlPerH! - baseline
  const threshold = Math.max(r.riseMlPerH, (Math.abs(baseline) * r.risePct) / 100)
  return { active: rise > threshold, value: last.minInputMlPerH!, night: last.night, baseline }
}

/** A customer meter's verdict; undefined while it has fewer than `customerNights` complete nights above zero and none at zero. */
export function judgeCustomer(nights: MeterNight[], r: Rule): NightVerdict | undefined {
  const done = nights.filter((n) => n.complete && n.minMlPerH !== null).sort(byNight)
  if (!done.length) return undefined
  const last = done[done.length - 1]
  if (last.minMlPerH! <= 0) return { active: false, value: 0, night: last.night }
  let run = 0
  while (run < done.length && done[done.length - 1 - run].minMlPerH! > 0) run++
  if (run < r.customerNights) return undefined
  const tail = done.slice(-r.customerNights).map((n) => n.minMlPerH!)
  return { active: true, value: Math.min(...tail), night: last.night }
}
