// The per-frame rules: what one frame does to its meter, decided from the meter's registry row and
// the frame alone. Pure: no store, no clock, no logs. The pipeline writes what the verdict says.
import { openEnvelope, envelopeId, readEnvelope, type UplinkEnvelope } from "../codec.js"
import { FrameError, type AlarmFrame, type ReadingsFrame, type SealContext, type UplinkFrame } from "../codec/frames.js"
import { outOfRange } from "../store/columns.js"
import type { AlarmEvent, BirthInfo, MeterRow, MeterSeal, ReadingRow } from "../store/store.js"
import type { UpKind } from "../topics.js"
import { alarmEvent, birthInfo, expandReadings } from "./rows.js"

/**
 * Seq plausibility: a meter assigns one seq per readings frame and one per alarm edge. Eleven
 * alarm types, each raised and cleared, and one frame make at most 23 per interval; a frame
 * whose seq is beyond what the meter can have counted since its birth is corrupt or forged.
 */
export const MAX_SEQS_PER_INTERVAL = 24
export const SEQ_SLACK = 32
/** Boot plausibility: restarts between two births the bridge sees. */
export const MAX_BOOT_JUMP = 10_000

const NO_KEYS: SealContext = { policy: "open", keys: [] }

/** The decoder's view of a meter's sealing (an unknown meter in the demo: open). */
export function sealContext(meter: MeterRow | undefined): SealContext {
  if (!meter) return NO_KEYS
  const keys = [meter.seal.key, meter.seal.nextKey].filter((k): k is Uint8Array => k !== null)
  return { policy: meter.seal.policy, keys }
}

/**
 * An uplink as read on arrival, before its meter's row is known: the envelope and, when it is not
 * sealed (most frames), its frame already decoded, while the previous batch commits.
 */
export interface ArrivalRead {
  envelope?: UplinkEnvelope
  /** The envelope could not be read (size, structure, encoding). */
  error?: FrameError
  /** An unsealed envelope's frame, decoded on arrival without keys, or what is wrong with it. */
  plainFrame?: UplinkFrame | FrameError
}

/** Reads an uplink on arrival; undefined when reading it met a bug (met again, and parked, in the batch). */
export function readArrival(kind: UpKind, payload: Uint8Array, at: Date): ArrivalRead | undefined {
  try {
    const envelope = readEnvelope(kind, payload)
    if (envelope.uplink.body === "sealed") return { envelope }
    try {
      return { envelope, plainFrame: openEnvelope(envelope, at.getTime() / 1000, NO_KEYS) }
    } catch (e) {
      // anything but a FrameError is a bug: met again in the batch, where the frame is parked
      return e instanceof FrameError ? { envelope, plainFrame: e } : { envelope }
    }
  } catch (e) {
    return e instanceof FrameError ? { error: e } : undefined
  }
}

/** One uplink, as the rules see it. */
export interface FrameInput {
  /** From the topic; undefined when it is not an uplink topic. */
  meterId: string | null
  kind: UpKind | undefined
  payload: Uint8Array
  at: Date
  read: ArrivalRead | undefined
}

/** A change of the meter's registry row, written in frame order (a later frame may depend on it). */
export type MeterWrite =
  | { op: "setSeal"; seal: Partial<MeterSeal> }
  | { op: "markActive" }
  | { op: "recordBirth"; birth: BirthInfo }
  | { op: "recordDeath"; boot: number }

/** What one frame comes to. Writes decided before an error stand (a key rotation the seal proved). */
export interface Verdict {
  /** The meter's row as the frames after this one see it; undefined while the meter is unknown. */
  meter: MeterRow | undefined
  frame?: UplinkFrame
  /** Dead-lettered with this reason. */
  error?: FrameError
  /** A bug in the bridge met while deciding: parked like a frame the data tier refuses. */
  bug?: Error
  /** The key downlinks to this meter are sealed with (null: unsealed), as the frame found it. */
  downlinkKey: Uint8Array | null
  /** Register the meter, or advance its last_seen. */
  touch: boolean
  writes: MeterWrite[]
  /** Readings rows and the alarm edge, written when the ledger claims the frame as new. */
  rows?: ReadingRow[]
  event?: AlarmEvent
  /** Acknowledged to the meter after the commit. */
  ack?: { boot: number; seq: number }
  /** The meter switched to its next key: the rotation is confirmed. */
  keyConfirmed?: boolean
  /** A birth started a new life: its boot went back or jumped ahead from this one. */
  previousBoot?: number
}

export interface RuleOptions {
  /** Frames of meters the registry does not know register them (the demo). */
  autoRegister?: boolean
}

/** Decides one frame against its meter's row. Never throws: a bug is returned as `bug`. */
export function judgeFrame(meter: MeterRow | undefined, input: FrameInput, opts: RuleOptions = {}): Verdict {
  const v: Verdict = { meter, downlinkKey: null, touch: false, writes: [] }
  try {
    decide(v, input, opts)
  } catch (e) {
    if (e instanceof FrameError) v.error = e
    else {
      v.bug = e as Error
      v.error = new FrameError("CM_ERR_STORE_REFUSED", (e as Error).message)
      if (input.kind === "readings" || input.kind === "alarm") v.ack = idInClear(input)
    }
  }
  return v
}

/** The (boot, seq) a parked frame is acknowledged with, read from its clear envelope. */
export const idInClear = (input: Pick<FrameInput, "read">) =>
  input.read?.envelope ? envelopeId(input.read.envelope) : undefined

/** The frame, opened under the meter's sealing: decoded on arrival for an open meter without keys. */
function frameOf(input: FrameInput, kind: UpKind, meter: MeterRow | undefined): UplinkFrame {
  const { read } = input
  if (!read) return openEnvelope(readEnvelope(kind, input.payload), input.at.getTime() / 1000, sealContext(meter))
  if (read.error) throw read.error
  const envelope = read.envelope!
  const sealed = envelope.uplink.body === "sealed" || meter?.seal.policy === "sealed"
  if (sealed || !read.plainFrame) return openEnvelope(envelope, input.at.getTime() / 1000, sealContext(meter))
  if (read.plainFrame instanceof FrameError) throw read.plainFrame
  return read.plainFrame
}

function decide(v: Verdict, input: FrameInput, opts: RuleOptions) {
  const { meterId, kind, at } = input
  if (!kind || meterId === null) throw new FrameError("CM_ERR_TOPIC", "not a citymeter/v1/<meter>/up/<kind> topic")
  // the meter first: its registry entry says whether (and with which keys) its frames are sealed
  if (!v.meter && !opts.autoRegister) throw new FrameError("CM_ERR_UNKNOWN_METER", "meter is not provisioned")
  const frame = frameOf(input, kind, v.meter)
  v.frame = frame
  if (!v.meter) v.touch = true
  const m: MeterRow = { ...(v.meter ?? newMeterRow(meterId, at)) }
  v.meter = m
  v.downlinkKey = m.seal.policy === "sealed" ? m.seal.key : null
  if (frame.keyIndex === 1) {
    // sealed with the next key: the meter has switched (key rotation); the next key is now the key
    const seal = { key: m.seal.nextKey, nextKey: null }
    m.seal = { ...m.seal, ...seal }
    v.keyConfirmed = true
    v.writes.push({ op: "setSeal", seal })
  }
  switch (frame.kind) {
    case "readings": {
      checkWindow(m, frame, at)
      const rows = expandReadings(meterId, frame, m.boot === frame.boot ? m.uptimeEpochMs : null, at)
      for (const r of rows) {
        const bad = outOfRange(r)
        if (bad) throw new FrameError("CM_ERR_FIELD", bad)
      }
      seen(v, m)
      v.rows = rows
      v.ack = { boot: frame.boot, seq: frame.seq }
      return
    }
    case "alarm":
      checkWindow(m, frame, at)
      seen(v, m)
      v.event = alarmEvent(meterId, frame, at)
      v.ack = { boot: frame.boot, seq: frame.seq }
      return
    case "birth":
      return birth(v, m, frame, at)
    case "death":
      if (frame.boot === 0) throw new FrameError("CM_ERR_STALE_DEATH", "a death without a boot changes nothing")
      // link = connection × 256 + birth number (proto Uplink.link): a will of an earlier connection is stale
      if (frame.boot === m.boot && frame.link > 0 && connectionOf(frame.link) < connectionOf(m.birthLink ?? 0))
        throw new FrameError(
          "CM_ERR_STALE_DEATH",
          `death of connection ${connectionOf(frame.link)}; connection ${connectionOf(m.birthLink ?? 0)} was born since`,
        )
      if (m.boot === null || m.boot <= frame.boot) m.online = false
      // the row in the data tier decides again (another bridge may have seen a birth since)
      v.writes.push({ op: "recordDeath", boot: frame.boot })
      return
  }
}

/** The store's row said a death was stale: the meter was born again since (another bridge saw it). */
export const staleDeath = (boot: number) =>
  new FrameError("CM_ERR_STALE_DEATH", `death of boot ${boot}; the meter was born again since`)

/** The ledger holds this (boot, seq) with other content: dead-lettered and alarmed, never dropped unseen. */
export const conflict = (f: ReadingsFrame | AlarmFrame, sha256: string, storedSha256: string) =>
  new FrameError(
    "CM_ERR_CONFLICT",
    `(boot ${f.boot}, seq ${f.seq}) was stored with content ${storedSha256.slice(0, 16)}…, this is ${sha256.slice(0, 16)}…`,
  )

function birth(v: Verdict, m: MeterRow, frame: Extract<UplinkFrame, { kind: "birth" }>, at: Date) {
  if (frame.keyIndex !== null && frame.boot === m.boot && frame.link <= (m.birthLink ?? 0))
    throw new FrameError(
      "CM_ERR_REPLAY",
      `birth ${frame.link} (connection × 256 + birth); ${m.birthLink} was born already`,
    )
  // A re-flashed or wiped meter starts a new life at a random boot in [2^21, 2^28) (firmware/flash-records.ts
  // firstBoot), far behind or far ahead of its last: taken as a new life, counted and logged,
  // never refused (refusing a jump ahead left the meter's queue unsendable for good).
  // Frames colliding with stored ones are conflicts (dead-lettered, alarmed), never dropped unseen.
  if (m.boot !== null && (frame.boot < m.boot || frame.boot > m.boot + MAX_BOOT_JUMP)) v.previousBoot = m.boot
  const b = birthInfo(frame, at)
  Object.assign(m, {
    online: true,
    lastSeen: at > m.lastSeen ? at : m.lastSeen,
    firmware: b.firmware,
    board: b.board,
    boot: b.boot,
    intervalS: b.intervalS,
    batch: b.batch,
    uptimeEpochMs: b.uptimeEpochMs,
    birthSeq: b.seq,
    bornAt: at,
    birthLink: b.link,
    channels: b.channels,
    alarmRules: b.alarmRules,
    queued: b.queued,
    dropped: b.dropped,
    unstored: b.unstored,
  } satisfies Partial<MeterRow>)
  v.writes.push({ op: "recordBirth", birth: b })
  activate(v, m)
}

/** A readings or alarm frame: the meter is seen (last_seen), and active again if it was INACTIVE. */
function seen(v: Verdict, m: MeterRow) {
  v.touch = true
  activate(v, m)
}

/** A frame from an INACTIVE meter makes it active again (the INACTIVE alarm cleared in the batch). */
function activate(v: Verdict, m: MeterRow) {
  if (!m.inactive) return
  m.inactive = false
  m.online = true
  v.writes.push({ op: "markActive" })
}

/**
 * Frames of the meter's current boot must have a seq it can have reached since its birth;
 * frames of a later boot than its last birth are not acknowledged (the meter sends them again
 * after its next birth); an implausible boot is corrupt. A meter never born has no window yet.
 */
function checkWindow(m: MeterRow, f: ReadingsFrame | AlarmFrame, at: Date) {
  if (m.boot === null) return
  if (f.boot > m.boot)
    throw new FrameError("CM_ERR_BOOT", `boot ${f.boot} is ahead of the meter's last birth (boot ${m.boot})`)
  if (f.boot < m.boot - MAX_BOOT_JUMP)
    throw new FrameError(
      "CM_ERR_BOOT",
      `boot ${f.boot} is more than ${MAX_BOOT_JUMP} behind the last birth (${m.boot})`,
    )
  const since = f.boot === m.boot ? m.bornAt : m.firstSeen
  if (!since) return
  const intervalS = Math.max(1, Math.min(m.intervalS ?? 1, f.kind === "readings" ? f.intervalS : Infinity))
  const intervals = Math.ceil(Math.max(0, at.getTime() - since.getTime()) / 1000 / intervalS)
  const maxSeq = (f.boot === m.boot ? (m.birthSeq ?? 0) : 0) + MAX_SEQS_PER_INTERVAL * intervals + SEQ_SLACK
  if (f.seq > maxSeq)
    throw new FrameError("CM_ERR_SEQ", `seq ${f.seq} is beyond ${maxSeq}, the most boot ${f.boot} can have reached`)
}

/** The connection part of proto Uplink.link (connection × 256 + birth number). */
const connectionOf = (link: number) => Math.floor(link / 256)

/** A meter registered by its first frame (the demo): no birth yet, no seq window. */
export function newMeterRow(meterId: string, at: Date): MeterRow {
  return {
    meterId,
    online: false,
    firstSeen: at,
    lastSeen: at,
    firmware: null,
    board: null,
    boot: null,
    intervalS: null,
    batch: null,
    uptimeEpochMs: null,
    inactive: false,
    queued: null,
    dropped: null,
    unstored: null,
    location: null,
    birthSeq: null,
    bornAt: null,
    birthLink: null,
    channels: [],
    alarmRules: [],
    seal: { policy: "open", key: null, nextKey: null },
  }
}

/** A live (not replayed) synced frame whose end is further than this from its arrival has a wrong clock. */
export const CLOCK_SKEW_TOLERANCE_MS = 120_000

/** How far a live synced frame's end is from its arrival (ms), when beyond the tolerance; else undefined. */
export function clockSkewMs(f: ReadingsFrame, at: Date): number | undefined {
  if (!f.timeSynced || f.replayed) return undefined
  const skewMs = (f.startS + f.intervals.length * f.intervalS) * 1000 - at.getTime()
  return Math.abs(skewMs) <= CLOCK_SKEW_TOLERANCE_MS + f.intervalS * 1000 ? undefined : skewMs
}
