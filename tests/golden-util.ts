import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { citymeter } from "../bridge/src/gen/citymeter.js"

export const goldenDir = join(dirname(fileURLToPath(import.meta.url)), "../proto/golden")

export type GoldenMessage = "Uplink" | "Downlink"

const { Uplink, Downlink } = citymeter.v1
const toObjectOptions = { longs: Number, enums: String }

export function encodeGolden(message: GoldenMessage, json: object): string {
  const bytes =
    message === "Uplink"
      ? Uplink.encode(Uplink.fromObject(json)).finish()
      : Downlink.encode(Downlink.fromObject(json)).finish()
  return Buffer.from(bytes).toString("hex")
}

export function decodeGolden(message: GoldenMessage, hex: string): object {
  const bytes = Buffer.from(hex, "hex")
  return message === "Uplink"
    ? Uplink.toObject(Uplink.decode(bytes), toObjectOptions)
    : Downlink.toObject(Downlink.decode(bytes), toObjectOptions)
}
