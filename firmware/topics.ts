// The citymeter topic map, firmware side (bridge side: bridge/src/topics.ts; spec: proto/topics.md).
export const TOPIC_ROOT = "citymeter/v1"

export type UpKind = "readings" | "birth" | "alarm" | "death"

export function upTopic(meter: string, kind: UpKind): string {
    return `${TOPIC_ROOT}/${meter}/up/${kind}`
}

/** Subscription filter for every downlink to this meter. */
export function downFilter(meter: string): string {
    return `${TOPIC_ROOT}/${meter}/down/#`
}
