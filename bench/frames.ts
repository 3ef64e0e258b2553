// Frame size: the same interval readings as a citymeter Uplink, as a Sparkplug B DDATA payload
// (metric aliases + per-metric timestamps + datatypes, bench/sparkplug_b.proto) and as compact JSON,
// for 1, 4 and 16 intervals. Baseline: Sparkplug B; ratios are baseline / citymeter.
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import protobuf from "protobufjs"
import { decodeUplink } from "../bridge/src/codec.js"
import { sealUplink } from "../testkit/frames.js"
import { citymeter } from "../bridge/src/gen/citymeter.js"

const { Uplink } = citymeter.v1

export interface Interval {
  volumeMl: number
  energyWh: number
  powerW: number
  voltageDv: number
  pressureAvgPa: number
  pressureMinPa: number
  pressureMaxPa: number
}

export interface Batch {
  boot: number
  seq: number
  startS: number
  intervalS: number
  waterTotalMl: number
  energyTotalWh: number
  intervals: Interval[]
}

/** A household over n 15-minute intervals from 06:00: demand peaks, a steady load, pressure sag. */
export function householdBatch(n: number, seq = 42, startS = 1795413600): Batch {
  const intervals: Interval[] = []
  let water = 123_456_789
  let energy = 4_503_211
  for (let i = 0; i < n; i++) {
    const hour = 6 + (i * 900) / 3600
    const demand = Math.max(0, Math.sin(((hour - 5) / 24) * 2 * Math.PI * 2)) // two peaks a day
    const volumeMl = Math.round(demand * 42_000 + (i % 3) * 350)
    const powerW = Math.round(380 + 600 * demand + (i % 5) * 13)
    const energyWh = Math.round((powerW * 900) / 3600)
    const avg = Math.round(318_000 - volumeMl * 0.35)
    intervals.push({
      volumeMl,
      energyWh,
      powerW,
      voltageDv: 2300 + ((i * 7) % 19) - 9,
      pressureAvgPa: avg,
      pressureMinPa: avg - 600 - Math.round(volumeMl * 0.1),
      pressureMaxPa: avg + 500,
    })
    water += volumeMl
    energy += energyWh
  }
  return { boot: 3, seq, startS, intervalS: 900, waterTotalMl: water, energyTotalWh: energy, intervals }
}

export function encodeCitymeter(b: Batch, replayed = false): Uint8Array {
  const v = b.intervals
  return Uplink.encode(
    Uplink.fromObject({
      boot: b.boot,
      seq: b.seq,
      readings: {
        startS: b.startS,
        timeSynced: true,
        intervalS: b.intervalS,
        replayed,
        water: { totalMl: b.waterTotalMl, volumeMl: v.map((r) => r.volumeMl) },
        electricity: {
          totalWh: b.energyTotalWh,
          energyWh: v.map((r) => r.energyWh),
          powerW: v.map((r) => r.powerW),
          // delta-encoded, as the firmware sends it (proto voltage_delta_dv)
          voltageDeltaDv: v.map((r, i) => (i === 0 ? r.voltageDv : r.voltageDv - v[i - 1].voltageDv)),
        },
        pressure: {
          avgPa: v.map((r) => r.pressureAvgPa),
          belowAvgPa: v.map((r) => r.pressureAvgPa - r.pressureMinPa),
          aboveAvgPa: v.map((r) => r.pressureMaxPa - r.pressureAvgPa),
        },
      },
    }),
  ).finish()
}

const sparkplugRoot = protobuf.loadSync(join(dirname(fileURLToPath(import.meta.url)), "sparkplug_b.proto"))
const Payload = sparkplugRoot.lookupType("bench.sparkplug.Payload")
const DataType = sparkplugRoot.lookupEnum("bench.sparkplug.DataType").values

/** Metric aliases an NBIRTH/DBIRTH would have announced with their names. */
const ALIAS = { volume: 1, energy: 2, power: 3, voltage: 4, pAvg: 5, pMin: 6, pMax: 7, waterTotal: 8, energyTotal: 9 }

/** One DDATA payload: every interval value as a metric with alias, its own timestamp and datatype. */
export function encodeSparkplug(b: Batch): Uint8Array {
  const metrics: object[] = []
  const u32 = (alias: number, ts: number, v: number) => ({
    alias,
    timestamp: ts,
    datatype: DataType.UInt32,
    intValue: v,
  })
  b.intervals.forEach((r, i) => {
    const ts = (b.startS + (i + 1) * b.intervalS) * 1000
    metrics.push(
      u32(ALIAS.volume, ts, r.volumeMl),
      u32(ALIAS.energy, ts, r.energyWh),
      { alias: ALIAS.power, timestamp: ts, datatype: DataType.Int32, intValue: r.powerW >>> 0 },
      u32(ALIAS.voltage, ts, r.voltageDv),
      u32(ALIAS.pAvg, ts, r.pressureAvgPa),
      u32(ALIAS.pMin, ts, r.pressureMinPa),
      u32(ALIAS.pMax, ts, r.pressureMaxPa),
    )
  })
  const end = (b.startS + b.intervals.length * b.intervalS) * 1000
  metrics.push(
    { alias: ALIAS.waterTotal, timestamp: end, datatype: DataType.UInt64, longValue: b.waterTotalMl },
    { alias: ALIAS.energyTotal, timestamp: end, datatype: DataType.UInt64, longValue: b.energyTotalWh },
  )
  return Payload.encode(Payload.fromObject({ timestamp: end, seq: b.seq % 256, metrics })).finish()
}

/** Compact JSON of the same readings (no whitespace, short unit-suffixed keys). */
export function encodeJson(b: Batch): Uint8Array {
  return Buffer.from(
    JSON.stringify({
      boot: b.boot,
      seq: b.seq,
      start_s: b.startS,
      interval_s: b.intervalS,
      water_total_ml: b.waterTotalMl,
      energy_total_wh: b.energyTotalWh,
      readings: b.intervals.map((r) => ({
        volume_ml: r.volumeMl,
        energy_wh: r.energyWh,
        power_w: r.powerW,
        voltage_dv: r.voltageDv,
        pressure_avg_pa: r.pressureAvgPa,
        pressure_min_pa: r.pressureMinPa,
        pressure_max_pa: r.pressureMaxPa,
      })),
    }),
  )
}

export interface FrameSizeRow {
  intervals: number
  citymeter: number
  /** The same frame sealed, with a boot from the random range a wiped meter starts in. */
  sealed: number
  sparkplug: number
  json: number
}

export function frameSizeBench(): FrameSizeRow[] {
  console.log("\n## frame size (bytes of MQTT payload; 7 values per interval + 2 totals)")
  console.log("intervals  citymeter  sealed  Sparkplug B (baseline)  JSON  Sparkplug/citymeter  JSON/citymeter")
  const rows: FrameSizeRow[] = []
  for (const n of [1, 4, 16]) {
    const b = householdBatch(n)
    const cm = encodeCitymeter(b)
    // the citymeter frame is a valid uplink carrying exactly these readings
    const decoded = decodeUplink("readings", cm, b.startS + n * 900)
    if (decoded.kind !== "readings" || decoded.intervals.length !== n)
      throw new Error("citymeter frame does not decode")
    const sp = encodeSparkplug(b)
    const back = Payload.toObject(Payload.decode(sp), { longs: Number }) as { metrics: unknown[] }
    if (back.metrics.length !== n * 7 + 2) throw new Error("Sparkplug payload does not decode")
    const sealed = sealUplink(BENCH_KEY, { ...Uplink.decode(cm), boot: 123_456_789 })
    const row = {
      intervals: n,
      citymeter: cm.length,
      sealed: sealed.length,
      sparkplug: sp.length,
      json: encodeJson(b).length,
    }
    rows.push(row)
    console.log(
      `${String(n).padStart(9)}  ${String(row.citymeter).padStart(9)}  ${String(row.sealed).padStart(6)}  ${String(row.sparkplug).padStart(22)}  ${String(row.json).padStart(4)}  ` +
        `${(row.sparkplug / row.citymeter).toFixed(1).padStart(18)}×  ${(row.json / row.citymeter).toFixed(1).padStart(13)}×`,
    )
  }
  return rows
}

const BENCH_KEY = Buffer.alloc(32, 0x5a)

/**
 * Bridge-side cost of sealing: decode + validate of a 4-interval frame, open (baseline) against
 * sealed (AES-256-CCM verify and decrypt first), frames/s on one core in the same run.
 */
export function sealCostBench(quick: boolean) {
  const b = householdBatch(4)
  const nowS = b.startS + 4 * 900
  const open = encodeCitymeter(b)
  const sealed = sealUplink(BENCH_KEY, Uplink.decode(open))
  const ctx = { policy: "sealed" as const, keys: [BENCH_KEY] }
  const rate = (fn: () => void) => {
    const n = quick ? 5_000 : 100_000
    for (let i = 0; i < n / 10; i++) fn() // warm up
    const t0 = performance.now()
    for (let i = 0; i < n; i++) fn()
    return n / ((performance.now() - t0) / 1000)
  }
  const openRate = rate(() => decodeUplink("readings", open, nowS))
  const sealedRate = rate(() => decodeUplink("readings", sealed, nowS, ctx))
  console.log("\n## sealing cost on the bridge (decode + validate of a 4-interval frame, one core)")
  console.log(`open frame (baseline)   ${Math.round(openRate).toLocaleString("en")} frames/s`)
  console.log(
    `sealed frame            ${Math.round(sealedRate).toLocaleString("en")} frames/s  (${(sealedRate / openRate).toFixed(2)}× of open; +${sealed.length - open.length} bytes)`,
  )
  return { openRate, sealedRate }
}
