// The citymeter topic map, bridge side (firmware side: firmware/topics.ts; spec: proto/topics.md).
export const TOPIC_ROOT = "citymeter/v1"
export const UP_KINDS = ["readings", "birth", "alarm", "death"] as const
export const DOWN_KINDS = ["ack", "time", "config", "resend", "update"] as const
export type UpKind = (typeof UP_KINDS)[number]
export type DownKind = (typeof DOWN_KINDS)[number]

/** Device names Windows reserves in any folder: a meter id is also a file name (provision, flash). */
const RESERVED_NAMES = [
  "CON",
  "PRN",
  "AUX",
  "NUL",
  ...[1, 2, 3, 4, 5, 6, 7, 8, 9].flatMap((i) => [`COM${i}`, `LPT${i}`]),
]
const anyCase = (w: string) => [...w].map((c) => (/[A-Z]/.test(c) ? `[${c}${c.toLowerCase()}]` : c)).join("")

/**
 * The one meter-id grammar, used by the topic parser, the ACL, the API and the CLI. A meter id is
 * an MQTT topic level [MQTT-4.7.1] and a file name: printable ASCII letters, digits, '_', '.', '-';
 * at most 64 characters; it starts with a letter or digit (so never '.', '..' or '-'); and it is
 * not a reserved device name (CON, NUL, COM1, ...) with or without an extension. No regex flags,
 * so the same source serves as a JSON Schema pattern.
 */
export const METER_ID_PATTERN = new RegExp(
  `^(?!(?:${RESERVED_NAMES.map(anyCase).join("|")})(?:\\.|$))[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`,
)
export const METER_ID_RULE =
  "1-64 of A-Z a-z 0-9 _ . -, starting with a letter or digit, not a reserved device name (CON, NUL, COM1, ...)"

export function isMeterId(id: string): boolean {
  return METER_ID_PATTERN.test(id)
}

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
