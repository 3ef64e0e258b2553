// What the uplink decoder yields and refuses: its size and value limits, the reasons a frame is
// rejected (REJECT_REASONS, FrameError), and the shapes of the checked frames.

export const MAX_PAYLOAD_BYTES = 4096
export const MAX_INTERVALS = 96
export const MAX_INTERVAL_S = 86400
/** A synced timestamp further ahead of the bridge's clock than this is clock skew. */
export const MAX_FUTURE_SKEW_S = 600
/** No citymeter reading predates 2020-01-01: an older synced time is a wrong clock or a corrupt frame. */
export const MIN_SYNCED_S = 1_577_836_800
/** Birth firmware and board strings: printable ASCII, at most this long. */
export const MAX_LABEL_CHARS = 64
/** An alarm's measured value, in its rule's unit (mL, mL/min, s, Pa, dV): at most this in magnitude. */
export const MAX_ALARM_VALUE = 1e12

/**
 * Why a frame was not stored. Each is counted (citymeter_frames_rejected_total{reason}), logged
 * with the meter and kept as a dead letter; README "No reading lost" says what happens to each.
 */
export const REJECT_REASONS = {
  CM_ERR_TOPIC: "not a citymeter/v1/<meter>/up/<kind> topic, or a meter id outside the grammar",
  CM_ERR_OVERSIZE: `payload larger than ${MAX_PAYLOAD_BYTES} bytes`,
  CM_ERR_DECODE: "not a citymeter.v1.Uplink",
  CM_ERR_NONCANONICAL: "decodes, but is not the canonical encoding the firmware writes (unknown fields, bit flips)",
  CM_ERR_SEAL: "a sealed frame whose tag does not verify under the meter's key (forged, bit-flipped), or no key",
  CM_ERR_UNSEALED: "an open (unsealed) frame from a meter whose policy is sealed",
  CM_ERR_REPLAY: "a birth of a connection older than the meter's last birth (a replay)",
  CM_ERR_KIND_MISMATCH: "the envelope's body is not the topic's kind",
  CM_ERR_SERIES: "series lengths differ, or no or too many intervals",
  CM_ERR_INTERVAL: `interval_s outside 1..${MAX_INTERVAL_S}`,
  CM_ERR_FIELD: "a value outside what its field, its column or the physics of its channel allow",
  CM_ERR_SEQ: "seq missing, or beyond what the meter can have counted since its birth",
  CM_ERR_BOOT: "boot ahead of the meter's last birth, or an implausible jump",
  CM_ERR_CLOCK_SKEW: "a synced time in the future or before 2020",
  CM_ERR_UNKNOWN_METER: "the meter is not in the registry (production mode)",
  CM_ERR_CONFLICT: "same (meter, boot, seq) as a stored frame, different content",
  CM_ERR_STALE_DEATH: "a death from an earlier boot than the meter's last birth, or an empty one",
  CM_ERR_STORE_REFUSED: "the data tier refused the frame's content (not an outage)",
} as const

export type RejectCode = keyof typeof REJECT_REASONS

export class FrameError extends Error {
  constructor(
    readonly code: RejectCode,
    message: string,
  ) {
    super(message)
  }
}

export interface IntervalValues {
  volumeMl?: number
  reverseMl?: number
  energyWh?: number
  powerW?: number
  voltageDv?: number
  pressureMinPa?: number
  pressureAvgPa?: number
  pressureMaxPa?: number
}

export interface ReadingsFrame {
  kind: "readings"
  boot: number
  seq: number
  startS: number
  timeSynced: boolean
  intervalS: number
  replayed: boolean
  /** proto ReadingBatch.after_reboot: the meter's first frame after it started. */
  afterReboot: boolean
  waterTotalMl?: number
  energyTotalWh?: number
  intervals: IntervalValues[]
}
export interface BirthFrame {
  kind: "birth"
  /** proto Birth.channels and alarm_rules, by enum name (empty from firmware that predates them). */
  channels: string[]
  alarmRules: string[]
  boot: number
  seq: number
  firmware: string
  board: string
  intervalS: number
  batch: number
  waterTotalMl: number
  energyTotalWh: number
  queued: number
  dropped: number
  /** proto Birth.unstored: flash writes the meter's store refused since boot (frames in its RAM only). */
  unstored: number
  uptimeS: number
}
export interface AlarmFrame {
  kind: "alarm"
  boot: number
  seq: number
  type: string
  active: boolean
  timeS: number
  timeSynced: boolean
  value: number
}
export interface DeathFrame {
  kind: "death"
  boot: number
}
/** What every decoded frame carries besides its body. */
export interface FrameMeta {
  /** Births and deaths: the connection of this boot (proto Uplink.link). */
  link: number
  /** Index of the key that verified the seal (0: the key in force, 1: the next one), or null when open. */
  keyIndex: number | null
}
export type UplinkFrame = (ReadingsFrame | BirthFrame | AlarmFrame | DeathFrame) & FrameMeta

/** How a meter's frames are sealed (the registry's policy and keys). */
export interface SealContext {
  policy: "sealed" | "open"
  /** The key in force, then the next one while a rotation is unconfirmed. */
  keys: Uint8Array[]
}
