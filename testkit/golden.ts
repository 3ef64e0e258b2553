import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { readFileSync } from "node:fs"
import { citymeter } from "../bridge/src/gen/citymeter.js"
import { sealDownlinkBody } from "../bridge/src/codec/downlink.js"
import { sealUplink } from "./frames.js"
import { readJsonWithHex } from "../scripts/gen-proto.js"
import type { DownKind } from "../bridge/src/topics.js"

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

/** proto/golden/sealed/<name>.json: the golden frame `of`, sealed under a fixed test key. */
export interface SealedGolden {
  name: string
  message: GoldenMessage
  of: string
  /** 64 hex digits: a test key, never a meter's. */
  key: string
  /** Downlinks: the 12 clear nonce bytes (hex). */
  nonce?: string
  /** Births and deaths: the connection number bound into the nonce. */
  link?: number
  hex: string
}

export const sealedDir = join(goldenDir, "sealed")

export function plainGolden(name: string): { message: GoldenMessage; json: Record<string, unknown>; hex: string } {
  const { message, json } = JSON.parse(readFileSync(join(goldenDir, `${name}.json`), "utf8"))
  return { message, json, hex: readFileSync(join(goldenDir, `${name}.hex`), "utf8").trim() }
}

/** The sealed bytes of a sealed golden entry (deterministic: the uplink nonce comes from the frame). */
export function sealGolden(e: Omit<SealedGolden, "hex" | "name">): string {
  const { json } = plainGolden(e.of)
  const key = Buffer.from(e.key, "hex")
  if (e.message === "Uplink") {
    const u = Uplink.fromObject({ ...json, ...(e.link ? { link: e.link } : {}) })
    return Buffer.from(sealUplink(key, u)).toString("hex")
  }
  const kind = Object.keys(json)[0] as DownKind
  return Buffer.from(sealDownlinkBody(key, kind, json[kind] as object, Buffer.from(e.nonce!, "hex"))).toString("hex")
}

export function readSealedGolden(): SealedGolden[] {
  return readJsonWithHex<Omit<SealedGolden, "name" | "hex">>(sealedDir)
}
