// Downlinks: Config, Resend and an update window to one meter, token-guarded; 202 once the broker
// has them (QoS 1).
import type { FastifyInstance, FastifyReply } from "fastify"
import { encodeDownlink } from "../codec/downlink.js"
import { BRIDGE_DEFAULTS } from "../defaults.js"
import { ERROR_RESPONSES, errors } from "../errors.js"
import type { citymeter } from "../gen/citymeter.js"
import { keyId, newKey } from "../seal.js"
import type { DownKind } from "../topics.js"
import { TUNABLES, defaults, type TunableValues } from "../tunables/schema.js"
import { tunableErrors } from "../tunables.js"
import { knownMeter, meterParam, type RouteContext } from "./shared.js"

const DOWNLINK_TIMEOUT_MS = BRIDGE_DEFAULTS.downlinkTimeoutMs

const UINT32 = { type: "integer", minimum: 0, maximum: 0xffffffff } as const

/**
 * proto UpdateWindow: the runtime's WSSK connection string (as wssk_health.c parses it, at most
 * 120 B: the runtime keeps it in the settings bank, storage.runtimeValueMaxBytes) and the window's
 * length within the firmware's bounds (firmware/update-window.ts). The meter also refuses a window
 * its flash queue could not hold at its interval and batch.
 */
export const UPDATE_WINDOW_BODY = {
  type: "object",
  additionalProperties: false,
  required: ["conn", "windowS"],
  properties: {
    conn: {
      type: "string",
      maxLength: 120,
      pattern: "^ws://(wssk:)?[0-9a-fA-F]{64}@[^/:@\\s]+(:[0-9]{1,5})?/[!-~]*$",
      description:
        "The runtime's WSSK connection string, ws://[wssk:]<the link's 64 hex key>@host[:port]/path: sent sealed, never answered or logged",
    },
    windowS: {
      type: "integer",
      minimum: 10,
      maximum: 3600,
      description: "How long the meter stays off MQTT with the link armed, s",
    },
  },
} as const

/**
 * The Config downlink body: every tunable of proto/tunables.json by its proto Config field name,
 * within its bounds. Zero means "unchanged" on the wire (proto Config), so the least is 1 even
 * where the setting's is 0: such a setting is set to 0 by provisioning only.
 */
export const CONFIG_BODY_PROPERTIES = Object.fromEntries(
  TUNABLES.map((t) => [
    t.name,
    { type: "integer", minimum: Math.max(1, t.min), maximum: t.max, description: `${t.key}, ${t.unit}: ${t.meaning}` },
  ]),
)

type ConfigBody = Partial<TunableValues>

/**
 * What the meter would refuse: the body's values over the defaults (the bridge does not
 * keep the meter's own), and the queue against the bank of the board its last Birth named.
 */
export function configRefusals(body: ConfigBody, board: string | null): string[] {
  const v = { ...defaults(), ...body }
  const why = tunableErrors(v, board)
  const pulseNames = ["pulsesPerL", "impPerKwh", "maxFlowLmin", "maxPowerW", "pulseMs"] as const
  const unstated = pulseNames.filter((n) => body[n] === undefined)
  if (why.length && pulseErrorsIn(why) && unstated.length)
    why.push(`(checked with the defaults of ${unstated.join(", ")}: send them with it if this meter's differ)`)
  return why
}
const pulseErrorsIn = (why: string[]) => why.some((w) => /pulses\/s|impulses\/s|PULSE_MS/.test(w))

export async function downlinkRoutes(app: FastifyInstance, { store, downlink, requireScope }: RouteContext) {
  /** Sends one downlink to a known meter; 202 once the broker has it (QoS 1). */
  const send = async (
    reply: FastifyReply,
    meterId: string,
    kind: DownKind,
    d: citymeter.v1.Downlink.$Properties,
    extra: Record<string, unknown> = {},
  ) => {
    if (!downlink) throw errors.CM_ERR_NO_DOWNLINK()
    const meter = await knownMeter(store, meterId)
    // sealed meters refuse open downlinks: seal under the key in force
    const payload = encodeDownlink(d, meter.seal.policy === "sealed" ? (meter.seal.key ?? undefined) : undefined)
    // QoS 1: resolves on the broker's PUBACK; a broker that is away must not hold the request forever
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<false>((r) => (timer = setTimeout(() => r(false), DOWNLINK_TIMEOUT_MS)))
    const sent = await Promise.race([downlink(meterId, kind, payload).then(() => true), timeout])
    clearTimeout(timer)
    if (!sent) throw errors.CM_ERR_DOWNLINK_TIMEOUT(DOWNLINK_TIMEOUT_MS)
    return reply.status(202).send({ meterId, sent: kind, ...extra })
  }

  app.post<{ Params: { id: string }; Body: ConfigBody }>(
    "/meters/:id/config",
    {
      onRequest: requireScope.write,
      schema: {
        tags: ["downlinks"],
        summary: "Send a Config downlink (interval, batch, alarm thresholds, pulse constants: proto/tunables.json)",
        security: [{ bearer: [] }],
        params: meterParam,
        body: {
          type: "object",
          additionalProperties: false,
          minProperties: 1,
          properties: CONFIG_BODY_PROPERTIES,
        },
        response: ERROR_RESPONSES,
      },
    },
    async (req, reply) => {
      if (!downlink) throw errors.CM_ERR_NO_DOWNLINK()
      const meter = await knownMeter(store, req.params.id)
      const why = configRefusals(req.body, meter.board)
      if (why.length) throw errors.CM_ERR_CONFIG_REFUSED(meter.meterId, why.join("; "))
      return send(reply, meter.meterId, "config", { config: req.body })
    },
  )

  app.post<{ Params: { id: string }; Body: { boot: number; fromSeq: number } }>(
    "/meters/:id/resend",
    {
      onRequest: requireScope.write,
      schema: {
        tags: ["downlinks"],
        summary: "Ask a meter to send again every frame from (boot, fromSeq) on",
        security: [{ bearer: [] }],
        params: meterParam,
        body: {
          type: "object",
          additionalProperties: false,
          required: ["boot", "fromSeq"],
          properties: { boot: UINT32, fromSeq: UINT32 },
        },
        response: ERROR_RESPONSES,
      },
    },
    async (req, reply) => send(reply, req.params.id, "resend", { resend: req.body }),
  )

  app.post<{ Params: { id: string }; Body: { conn: string; windowS: number } }>(
    "/meters/:id/update-window",
    {
      onRequest: requireScope.ops,
      schema: {
        tags: ["downlinks"],
        summary: "Open a sealed meter's maintenance window for a fleet update (issue 23)",
        description:
          "The meter ends its MQTT session (its frames wait in its flash queue), arms the DeviceScript runtime's own " +
          "cloud link (WSSK) with the connection string for windowS seconds, then disarms it and reconnects. " +
          "Sent sealed under the meter's key: meters act on no open update window, so a meter that is not sealed " +
          "with a key is refused (400). The connection string holds the link's key and is never answered or logged.",
        security: [{ bearer: [] }],
        params: meterParam,
        body: UPDATE_WINDOW_BODY,
        response: ERROR_RESPONSES,
      },
    },
    async (req, reply) => {
      if (!downlink) throw errors.CM_ERR_NO_DOWNLINK()
      const meter = await knownMeter(store, req.params.id)
      if (meter.seal.policy !== "sealed" || !meter.seal.key)
        throw errors.CM_ERR_BAD_REQUEST(`meter ${meter.meterId} is not sealed with a key: it acts on no update window`)
      const { conn, windowS } = req.body
      return send(reply, meter.meterId, "update", { update: { conn, windowS } }, { windowS })
    },
  )

  app.post<{ Params: { id: string } }>(
    "/meters/:id/rotate-key",
    {
      onRequest: requireScope.write,
      schema: {
        tags: ["downlinks"],
        summary: "Rotate a sealed meter's key: a new random key goes to the meter in a Config sealed under the old one",
        description:
          "The bridge accepts frames under both keys until the meter seals one with the new key (its next birth), " +
          "then the new key is the key. Answers the new key's public id (Birth.key_id), never the key.",
        security: [{ bearer: [] }],
        params: meterParam,
        response: ERROR_RESPONSES,
      },
    },
    async (req, reply) => {
      if (!downlink) throw errors.CM_ERR_NO_DOWNLINK()
      const meter = await knownMeter(store, req.params.id)
      if (meter.seal.policy !== "sealed" || !meter.seal.key)
        throw errors.CM_ERR_BAD_REQUEST(`meter ${meter.meterId} is not sealed with a key: register one first`)
      const next = meter.seal.nextKey ?? newKey() // an unconfirmed rotation is sent again, not replaced
      await store.setSeal(meter.meterId, { nextKey: next })
      return send(reply, meter.meterId, "config", { config: { sealKey: next } }, { nextKeyId: keyId(next) })
    },
  )
}
