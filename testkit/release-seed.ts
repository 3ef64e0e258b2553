// What the upgrade test (tests/system/upgrade-release.test.ts) sends a previous release's bridge
// over MQTT, as meters would: births, readings, alarm edges, a reboot, a gap, a death and one
// undecodable frame, in 12 hours across a month's end (2026-10-31 18:00 to 11-01 06:00 UTC), so
// that hours, days and months each have more than one bucket. Frames are encoded with that
// release's own generated code.
import mqtt from "mqtt"
import { pathToFileURL } from "node:url"
import { join } from "node:path"

type Gen = typeof import("../bridge/src/gen/citymeter.js")

export const SEED_START = new Date("2026-10-31T18:00:00Z")
const T0 = SEED_START.getTime() / 1000
export const SEED_METERS = ["up-w1", "up-e1", "up-we1"] as const
/** Readings frames per meter: one an hour, 4 intervals of 15 minutes each. */
const FRAMES = 12
/** up-w1's frame of this hour never arrives: a gap its consumption shows. */
const LOST_FRAME = 8

/** Every reading the seed stores per meter. */
export const SEED_READINGS: Record<(typeof SEED_METERS)[number], number> = {
  "up-w1": (FRAMES - 1) * 4,
  "up-e1": FRAMES * 4,
  "up-we1": FRAMES * 4,
}
/** Alarm edges the seed sends (every meter's). */
export const SEED_ALARMS = 5

interface Frame {
  meterId: string
  kind: "birth" | "readings" | "alarm" | "death"
  body: Record<string, unknown>
  boot: number
  seq: number
}

const wave = (n: number, k: number) => (n * 7 + 3) % k
function series(meterId: string, frame: number) {
  const water = meterId !== "up-e1"
  const electricity = meterId !== "up-w1"
  const n = (i: number) => frame * 4 + i
  const volumes = [0, 1, 2, 3].map((i) => 100 + 10 * wave(n(i), 7))
  const energy = [0, 1, 2, 3].map((i) => 50 + 5 * wave(n(i), 5))
  const waterBefore = 1_000_000 + frame * 4 * 200
  const energyBefore = 20_000 + frame * 4 * 80
  return {
    startS: T0 + frame * 3600,
    timeSynced: true,
    intervalS: 900,
    ...(water
      ? {
          water: {
            totalMl: waterBefore + volumes.reduce((a, b) => a + b, 0),
            volumeMl: volumes,
            ...(frame === 4 ? { reverseMl: [0, 150, 0, 0] } : {}),
          },
          pressure: {
            avgPa: volumes.map((v) => 300_000 + v * 10),
            belowAvgPa: [2000, 2000, 2000, 2000],
            aboveAvgPa: [3000, 3000, 3000, 3000],
          },
        }
      : {}),
    ...(electricity
      ? {
          electricity: {
            totalWh: energyBefore + energy.reduce((a, b) => a + b, 0),
            energyWh: energy,
            powerW: energy.map((e) => e * 4),
            voltageDv: [0, 1, 2, 3].map((i) => 2300 - frame - i),
          },
        }
      : {}),
  }
}

/** The frames, in the order they are sent. */
function seedFrames(): Frame[] {
  const frames: Frame[] = []
  for (const meterId of SEED_METERS) {
    let boot = 1
    let seq = 0
    const birth = () =>
      frames.push({
        meterId,
        kind: "birth",
        boot,
        seq,
        body: { firmware: "citymeter-fw 0.2.0", board: "citymeter_esp32c3", intervalS: 900, batch: 4, uptimeS: 60 },
      })
    const alarm = (type: string, active: boolean, frame: number, value: number) =>
      frames.push({
        meterId,
        kind: "alarm",
        boot,
        seq: ++seq,
        body: { type, active, timeS: T0 + frame * 3600 + 1800, timeSynced: true, value },
      })
    birth()
    for (let f = 0; f < FRAMES; f++) {
      if (meterId === "up-we1" && f === 6) {
        boot = 2 // the meter restarted: a new boot, seq from 1 again
        seq = 0
        birth()
      }
      if (!(meterId === "up-w1" && f === LOST_FRAME))
        frames.push({ meterId, kind: "readings", boot, seq: ++seq, body: series(meterId, f) })
      else ++seq
      if (meterId === "up-w1" && f === 2) alarm("ALARM_TYPE_LEAK", true, f, 7200)
      if (meterId === "up-w1" && f === 7) alarm("ALARM_TYPE_LEAK", false, f, 0)
      if (meterId === "up-e1" && f === 5) alarm("ALARM_TYPE_UNDERVOLTAGE", true, f, 2050)
      if (meterId === "up-we1" && f === 3) alarm("ALARM_TYPE_TAMPER", true, f, 1)
      if (meterId === "up-we1" && f === 4) alarm("ALARM_TYPE_TAMPER", false, f, 0)
    }
    if (meterId === "up-e1") frames.push({ meterId, kind: "death", boot, seq, body: {} })
  }
  return frames
}

/** Sends the seed to a broker, encoded with the generated code of the release at `tree`. */
export async function sendSeed(tree: string, mqttUrl: string) {
  const gen = (await import(pathToFileURL(join(tree, "bridge/src/gen/citymeter.js")).href)) as Gen
  const { Uplink } = gen.citymeter.v1
  const client = await mqtt.connectAsync(mqttUrl, { clientId: `seed-${process.pid}`, reconnectPeriod: 0 })
  try {
    for (const f of seedFrames()) {
      const bytes = Uplink.encode(Uplink.fromObject({ boot: f.boot, seq: f.seq, [f.kind]: f.body })).finish()
      await client.publishAsync(`citymeter/v1/${f.meterId}/up/${f.kind}`, Buffer.from(bytes), { qos: 1 })
    }
    // a frame no release can decode: a dead letter
    await client.publishAsync("citymeter/v1/up-w1/up/readings", Buffer.from([0xff, 0xff, 0xff]), { qos: 1 })
  } finally {
    await client.endAsync()
  }
}
