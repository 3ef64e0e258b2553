// Human-readable views of decoded frames (watch, decode): the bridge's validated view of an uplink,
// and downlinks as the meter will read them.
import { citymeter } from "../bridge/src/gen/citymeter.js"
import type { UplinkFrame } from "../bridge/src/codec/frames.js"
import type { DownKind } from "../bridge/src/topics.js"

const { Downlink } = citymeter.v1

const litres = (ml: number) => `${(ml / 1000).toFixed(3)} L`
const kwh = (wh: number) => `${(wh / 1000).toFixed(3)} kWh`
const kpa = (pa: number) => `${(pa / 1000).toFixed(1)} kPa`

function when(s: number, synced: boolean) {
  return synced ? new Date(s * 1000).toISOString().replace(".000Z", "Z") : `uptime ${s} s`
}

/** Lines describing one validated uplink frame. */
export function describeUplink(f: UplinkFrame): string[] {
  switch (f.kind) {
    case "readings": {
      const head =
        `readings boot=${f.boot} seq=${f.seq}: ${f.intervals.length} × ${f.intervalS} s from ${when(f.startS, f.timeSynced)}` +
        (f.replayed ? " (replayed from the meter's queue)" : "")
      const totals = [
        f.waterTotalMl !== undefined ? `water total ${litres(f.waterTotalMl)}` : "",
        f.energyTotalWh !== undefined ? `energy total ${kwh(f.energyTotalWh)}` : "",
      ].filter(Boolean)
      const rows = f.intervals.map((v, i) => {
        const cells = [`  #${i + 1} ${when(f.startS + i * f.intervalS, f.timeSynced)}`]
        if (v.volumeMl !== undefined) cells.push(`water ${litres(v.volumeMl)}`)
        if (v.reverseMl) cells.push(`reverse ${litres(v.reverseMl)}`)
        if (v.energyWh !== undefined) cells.push(`energy ${v.energyWh} Wh`)
        if (v.powerW !== undefined) cells.push(`power ${v.powerW} W`)
        if (v.voltageDv !== undefined) cells.push(`voltage ${(v.voltageDv / 10).toFixed(1)} V`)
        if (v.pressureAvgPa !== undefined)
          cells.push(
            `pressure ${kpa(v.pressureAvgPa)} (min ${kpa(v.pressureMinPa ?? 0)}, max ${kpa(v.pressureMaxPa ?? 0)})`,
          )
        return cells.join(", ")
      })
      return [head + (totals.length ? `; ${totals.join(", ")}` : ""), ...rows]
    }
    case "birth":
      return [
        `birth boot=${f.boot} seq=${f.seq}: ${f.firmware} on ${f.board}, ${f.intervalS} s × ${f.batch} per frame, ` +
          `water total ${litres(f.waterTotalMl)}, energy total ${kwh(f.energyTotalWh)}, ` +
          `${f.queued} queued, ${f.dropped} dropped, up ${f.uptimeS} s`,
      ]
    case "alarm":
      return [
        `alarm boot=${f.boot} seq=${f.seq}: ${f.type} ${f.active ? "RAISED" : "cleared"} at ${when(f.timeS, f.timeSynced)}, value ${f.value}`,
      ]
    case "death":
      return [`death boot=${f.boot}: the meter went offline (its MQTT will)`]
  }
}

/** One line for a downlink payload. */
export function describeDownlink(payload: Uint8Array, kind?: DownKind): string {
  const d = Downlink.decode(payload)
  const body = d.body ?? "none"
  const mismatch = kind && body !== kind ? ` (on a down/${kind} topic!)` : ""
  switch (d.body) {
    case "ack":
      return `ack boot=${d.ack!.boot} seq=${d.ack!.seq}: committed by the bridge${mismatch}`
    case "time": {
      const ms = Number(d.time!.unixMs)
      return `time ${new Date(ms).toISOString()} (echo of uptime ${d.time!.uptimeS} s)${mismatch}`
    }
    case "config": {
      const c = citymeter.v1.Config.toObject(d.config as citymeter.v1.Config, { longs: Number })
      const set = Object.entries(c).filter(([, v]) => v !== 0)
      return `config ${set.map(([k, v]) => `${k}=${v}`).join(" ") || "(no changes)"}${mismatch}`
    }
    case "resend":
      return `resend boot=${d.resend!.boot} from seq ${d.resend!.fromSeq}${mismatch}`
    case "update":
      // the connection string carries the link's key: never shown (and a meter acts on it only sealed)
      return `update window ${d.update!.windowS} s (connection string withheld; unsealed: meters refuse it)${mismatch}`
    default:
      return `downlink without a body${mismatch}`
  }
}
