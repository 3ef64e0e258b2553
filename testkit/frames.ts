// Uplink frames as a meter would send them, built from plain objects (protobufjs fromObject:
// 64-bit values may be decimal strings, enums numbers or names). One place for the tests and
// benchmarks that publish frames without a firmware VM, open or sealed.
import protobuf from "protobufjs/minimal.js"
import { citymeter } from "../bridge/src/gen/citymeter.js"
import { num } from "../bridge/src/codec/payload.js"
import { seal, uplinkNonce } from "../bridge/src/seal.js"
import { UP_KINDS } from "../bridge/src/topics.js"

const { Uplink } = citymeter.v1

/** Any Uplink, encoded: `uplink({ boot: 1, seq: 1, readings: {…} })`. */
export const uplink = (o: Record<string, unknown>): Buffer => Buffer.from(Uplink.encode(Uplink.fromObject(o)).finish())

export interface ReadingsFrameOptions {
  seq: number
  /** The first interval's start, unix seconds (synced). */
  startS: number
  boot?: number
  intervalS?: number
  /** One water volume per interval, mL. */
  volumeMl?: number[]
  /** The water total after the last interval, mL. */
  totalMl?: number
  /** More of the Readings message (electricity, pressure, replayed …), merged in. */
  readings?: Record<string, unknown>
}

/** A synced readings frame of water volumes: boot 1, 60 s intervals, one of 1 mL unless told. */
export function readingsFrame(o: ReadingsFrameOptions): Buffer {
  return uplink({
    boot: o.boot ?? 1,
    seq: o.seq,
    readings: {
      startS: o.startS,
      timeSynced: true,
      intervalS: o.intervalS ?? 60,
      water: { totalMl: o.totalMl, volumeMl: o.volumeMl ?? [1] },
      ...o.readings,
    },
  })
}

/** A birth (seq 0) announcing interval and batch. */
export function birthFrame(boot: number, birth: Record<string, unknown> = {}): Buffer {
  return uplink({
    boot,
    seq: 0,
    birth: { firmware: "fw-test 1.0", board: "esp32", intervalS: 900, batch: 4, uptimeS: 5, ...birth },
  })
}

const UP_BODY = {
  readings: citymeter.v1.ReadingBatch,
  birth: citymeter.v1.Birth,
  alarm: citymeter.v1.Alarm,
  death: citymeter.v1.Death,
}

/** The sealed form of an uplink (the firmware's job; here for the tests, the benchmarks and the golden frames). */
export function sealUplink(key: Uint8Array, u: citymeter.v1.IUplink): Uint8Array {
  const kind = UP_KINDS.find((k) => u[k] !== undefined && u[k] !== null)
  if (!kind) throw new Error("an uplink needs a body")
  const type = UP_BODY[kind] as unknown as { encode(m: object): protobuf.Writer; fromObject(o: object): object }
  const plain = type.encode(type.fromObject(u[kind]!)).finish()
  const [boot, seq, link] = [num(u.boot), num(u.seq), num(u.link)]
  return Uplink.encode({ boot, seq, link, sealed: seal(key, uplinkNonce(kind, boot, seq, link), plain) }).finish()
}
