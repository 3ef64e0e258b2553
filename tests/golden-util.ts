import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { citymeter } from "../bridge/src/gen/citymeter.js"

export const goldenDir = join(dirname(fileURLToPath(import.meta.url)), "../proto/golden")

const types = { Uplink: citymeter.v1.Uplink, Downlink: citymeter.v1.Downlink }
export type GoldenMessage = keyof typeof types

export function encodeGolden(message: GoldenMessage, json: object): string {
  const T = types[message]
  return Buffer.from(T.encode(T.fromObject(json)).finish()).toString("hex")
}

export function decodeGolden(message: GoldenMessage, hex: string): object {
  const T = types[message]
  return T.toObject(T.decode(Buffer.from(hex, "hex")), { longs: Number, enums: String })
}
