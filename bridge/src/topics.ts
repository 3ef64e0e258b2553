// The citymeter topic map, bridge side (firmware side: firmware/topics.ts; spec: proto/topics.md).
export const TOPIC_ROOT = "citymeter/v1"
export const UP_KINDS = ["readings", "birth", "alarm", "death"] as const
export const DOWN_KINDS = ["ack", "time", "config", "resend"] as const
export type UpKind = (typeof UP_KINDS)[number]
export type DownKind = (typeof DOWN_KINDS)[number]

/** Meter ids are topic levels: no wildcards, no separators, bounded length. */
export const METER_ID_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/

export function upTopic(meterId: string, kind: UpKind): string {
  return `${TOPIC_ROOT}/${meterId}/up/${kind}`
}

export function downTopic(meterId: string, kind: DownKind): string {
  return `${TOPIC_ROOT}/${meterId}/down/${kind}`
}

/** Every uplink of every meter; with a share group for MQTT 5 shared subscriptions. */
export function upFilter(shareGroup?: string): string {
  const filter = `${TOPIC_ROOT}/+/up/+`
  return shareGroup ? `$share/${shareGroup}/${filter}` : filter
}

export type ParsedUpTopic = { meterId: string; kind: UpKind }

/** Parses an uplink topic; undefined when it is not one (wrong prefix, bad meter id, unknown kind). */
export function parseUpTopic(topic: string): ParsedUpTopic | undefined {
  const parts = topic.split("/")
  if (parts.length !== 5 || `${parts[0]}/${parts[1]}` !== TOPIC_ROOT || parts[3] !== "up") return undefined
  const [, , meterId, , kind] = parts
  if (!METER_ID_PATTERN.test(meterId)) return undefined
  if (!(UP_KINDS as readonly string[]).includes(kind)) return undefined
  return { meterId, kind: kind as UpKind }
}
