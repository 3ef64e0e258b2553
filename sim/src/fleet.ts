// Fleet generator: thousands to 100k virtual meters in Node that speak the citymeter protocol
// (frames from protobufjs, the same messages the firmware writes; tests/system/fleet.test.ts checks
// them against the golden frames). For load only: the firmware's own behaviour is tested by
// running the firmware (sim/src/meter.ts).
//
// Two connection modes: `perMeter` gives every meter its own MQTT connection, client id, birth
// and last will (realistic, for reconnect storms; bounded by file descriptors), `pooled` publishes
// for many meters over a few connections (for 100k-meter ingest load).
import mqtt, { type MqttClient } from "mqtt"
import { citymeter } from "../../bridge/src/gen/citymeter.js"
import { upTopic } from "../../bridge/src/topics.js"

const { Uplink } = citymeter.v1

export interface VirtualMeter {
  meterId: string
  boot: number
  seq: number
  waterTotalMl: number
  energyTotalWh: number
}

export interface FleetOptions {
  mqttUrl: string
  meters: number
  prefix?: string
  intervalS?: number
  batch?: number
  mode?: "perMeter" | "pooled"
  /** Connections in pooled mode. */
  pool?: number
}

/** The readings frame a meter sends for `batch` intervals ending now (deterministic volumes). */
export function readingsUplink(
  m: VirtualMeter,
  startS: number,
  intervalS: number,
  batch: number,
): citymeter.v1.Uplink.$Properties {
  const volumes = Array.from({ length: batch }, (_, i) => ((m.seq * 7 + i * 13) % 50) * 10)
  const energy = Array.from({ length: batch }, (_, i) => (m.seq + i) % 3)
  m.seq += 1
  m.waterTotalMl += volumes.reduce((a, b) => a + b, 0)
  m.energyTotalWh += energy.reduce((a, b) => a + b, 0)
  return {
    boot: m.boot,
    seq: m.seq,
    readings: {
      startS,
      timeSynced: true,
      intervalS,
      water: { totalMl: m.waterTotalMl, volumeMl: volumes },
      electricity: {
        totalWh: m.energyTotalWh,
        energyWh: energy,
        powerW: energy.map((e) => Math.round((e * 3600) / intervalS)),
        voltageDv: energy.map(() => 2300),
      },
      pressure: {
        avgPa: volumes.map(() => 310_000),
        belowAvgPa: volumes.map(() => 500),
        aboveAvgPa: volumes.map(() => 400),
      },
    },
  }
}

export function encodeUplink(u: citymeter.v1.Uplink.$Properties): Buffer {
  return Buffer.from(Uplink.encode(Uplink.fromObject(u)).finish())
}

export function birthUplink(m: VirtualMeter, intervalS: number, batch: number): citymeter.v1.Uplink.$Properties {
  return {
    boot: m.boot,
    seq: m.seq,
    birth: {
      firmware: "citymeter-fleet 0.1.0",
      board: "virtual",
      intervalS,
      batch,
      waterTotalMl: m.waterTotalMl,
      energyTotalWh: m.energyTotalWh,
      uptimeS: 1,
    },
  }
}

export class Fleet {
  readonly meters: VirtualMeter[]
  private clients: MqttClient[] = []
  readonly intervalS: number
  readonly batch: number

  constructor(readonly o: FleetOptions) {
    this.intervalS = o.intervalS ?? 900
    this.batch = o.batch ?? 4
    const prefix = o.prefix ?? "fleet"
    this.meters = Array.from({ length: o.meters }, (_, i) => ({
      meterId: `${prefix}-${i}`,
      boot: 1,
      seq: 0,
      waterTotalMl: 1_000_000 + i,
      energyTotalWh: 10_000 + i,
    }))
  }

  private connectOne(clientId: string, m?: VirtualMeter): Promise<MqttClient> {
    return mqtt.connectAsync(this.o.mqttUrl, {
      clientId,
      reconnectPeriod: 0,
      connectTimeout: 30_000,
      will: m
        ? {
            topic: upTopic(m.meterId, "death"),
            payload: encodeUplink({ boot: m.boot, death: {} }),
            qos: 1,
            retain: false,
          }
        : undefined,
    })
  }

  /** Connects every meter (perMeter) or the pool; in perMeter mode each meter sends its birth. */
  async connect(concurrency = 200): Promise<void> {
    if (this.o.mode === "perMeter") {
      this.clients = new Array(this.meters.length)
      for (let i = 0; i < this.meters.length; i += concurrency) {
        await Promise.all(
          this.meters.slice(i, i + concurrency).map(async (m, j) => {
            const c = await this.connectOne(m.meterId, m)
            this.clients[i + j] = c
            await c.publishAsync(
              upTopic(m.meterId, "birth"),
              encodeUplink(birthUplink(m, this.intervalS, this.batch)),
              { qos: 1 },
            )
          }),
        )
      }
    } else {
      const n = this.o.pool ?? 4
      this.clients = await Promise.all(
        Array.from({ length: n }, (_, i) => this.connectOne(`${this.o.prefix ?? "fleet"}-pool-${i}`)),
      )
    }
  }

  private clientFor(i: number) {
    return this.o.mode === "perMeter" ? this.clients[i] : this.clients[i % this.clients.length]
  }

  /** Every meter sends one readings frame (QoS 1); resolves when the broker acknowledged them all. */
  async sendRound(nowS = Math.floor(Date.now() / 1000)): Promise<number> {
    const startS = nowS - this.intervalS * this.batch
    await Promise.all(
      this.meters.map((m, i) =>
        this.clientFor(i).publishAsync(
          upTopic(m.meterId, "readings"),
          encodeUplink(readingsUplink(m, startS, this.intervalS, this.batch)),
          {
            qos: 1,
          },
        ),
      ),
    )
    return this.meters.length
  }

  /**
   * Reconnect storm: every connection drops at once (as after a broker or network failure) and
   * all reconnect together, each meter with a new boot and a birth. Returns the time it took.
   */
  async reconnectStorm(): Promise<number> {
    await Promise.all(this.clients.map((c) => c.endAsync(true)))
    for (const m of this.meters) {
      m.boot += 1
      m.seq = 0
    }
    const t0 = performance.now()
    await this.connect(this.meters.length)
    return performance.now() - t0
  }

  async close() {
    await Promise.all(this.clients.map((c) => c?.endAsync()))
  }
}
