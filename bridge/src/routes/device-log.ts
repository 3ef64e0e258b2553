// A meter's device log, on demand, for field debugging (issue 23 item 6): GET /meters/:id/device-log
// streams what the DeviceScript runtime sends over the meter's WSSK link (0x90 DMESG) as
// server-sent events, `event: line` per line, then `event: end` with the reason. Ops scope. Bounded:
// `seconds`, `maxLines`, a byte cap per stream, streams at once in the process and one per meter
// (BRIDGE_DEFAULTS.deviceLog). A line is sanitised (device-log.ts): no device can add SSE fields.
// The stream's start and end are logged (who, meter, reason, lines), never the lines themselves.
// When the stream ends its listener is removed, and the device stops streaming once none is left.
import type { FastifyInstance } from "fastify"
import { BRIDGE_DEFAULTS } from "../defaults.js"
import { StreamSlots, lineEvent, sseEvent, type DeviceLogEnd } from "../device-log.js"
import { ERROR_SCHEMA, errors } from "../errors.js"
import { knownMeter, meterParam, strictQuery, type RouteContext } from "./shared.js"

const D = BRIDGE_DEFAULTS.deviceLog

export const DEVICE_LOG_QUERY = strictQuery({
  seconds: {
    type: "integer",
    minimum: 1,
    maximum: D.maxSeconds,
    default: D.defaultSeconds,
    description: "How long the stream lasts, s",
  },
  maxLines: {
    type: "integer",
    minimum: 1,
    maximum: D.maxLines,
    default: D.defaultLines,
    description: "The stream ends after this many lines",
  },
})

export async function deviceLogRoutes(app: FastifyInstance, { store, metrics, wssk, requireScope }: RouteContext) {
  const slots = new StreamSlots(D.maxStreams)
  /** Each open stream, as the function that ends it. */
  const openStreams = new Set<(reason: DeviceLogEnd) => void>()
  // streams never go idle: end them before the server waits for its connections to close
  app.addHook("preClose", async () => {
    for (const end of [...openStreams]) end("shutdown")
  })

  app.get<{ Params: { id: string }; Querystring: { seconds?: number; maxLines?: number } }>(
    "/meters/:id/device-log",
    {
      onRequest: requireScope.ops,
      schema: {
        tags: ["updates"],
        summary: "Stream a meter's device log over its WSSK link (text/event-stream), for field debugging",
        description:
          "Server-sent events: `event: line` data {at, line} per line of the DeviceScript runtime's log (0x90 DMESG; " +
          `\`at\` the time the bridge received it, \`line\` at most 512 characters, control characters but tab ` +
          "replaced by U+FFFD), then `event: end` data {reason, lines, bytes}: `time` (`seconds` up), `lines` " +
          `(\`maxLines\` sent), \`bytes\` (${D.maxBytes} bytes of events), \`link_closed\`, \`client_gone\`, ` +
          "`shutdown`. Ops scope. The meter's WSSK link must be up in this process: 409 CM_ERR_NO_LINK " +
          "otherwise (open an update window: POST /meters/:id/update-window), 503 CM_ERR_NO_WSSK without " +
          `WSSK_PORT. One stream per meter (429 CM_ERR_DEVICE_LOG_BUSY), ${D.maxStreams} in the process ` +
          "(503 CM_ERR_BUSY), both with Retry-After. The device stops streaming when no stream is left.",
        security: [{ bearer: [] }],
        params: meterParam,
        querystring: DEVICE_LOG_QUERY,
        // the stream is text/event-stream, its refusals application/json (ERROR_SCHEMA)
        response: {
          200: {
            description:
              "`event: line` data {at, line} per device log line, then `event: end` data {reason, lines, bytes}",
            content: { "text/event-stream": { schema: { type: "string" } } },
          },
          "4xx": { content: { "application/json": { schema: ERROR_SCHEMA } } },
          "5xx": { content: { "application/json": { schema: ERROR_SCHEMA } } },
        },
      },
    },
    async (req, reply) => {
      if (!wssk) throw errors.CM_ERR_NO_WSSK()
      const meterId = (await knownMeter(store, req.params.id)).meterId
      const link = wssk.link(meterId)
      if (!link) throw errors.CM_ERR_NO_LINK(meterId, meterId)
      const seconds = req.query.seconds ?? D.defaultSeconds
      const maxLines = req.query.maxLines ?? D.defaultLines
      const slot = slots.take(meterId)
      if ("refused" in slot) {
        if (slot.refused === "meter") throw errors.CM_ERR_DEVICE_LOG_BUSY(meterId)
        metrics.httpShed.inc({ reason: "device_log_streams" })
        throw errors.CM_ERR_BUSY(`the bridge streams at most ${D.maxStreams} device logs at once`)
      }
      const release = slot.release

      const res = reply.raw
      let lines = 0
      let bytes = 0
      let ended = false
      let stop: (() => void) | undefined
      const onLine = (line: string) => {
        if (ended) return
        const ev = lineEvent(line)
        const n = Buffer.byteLength(ev)
        if (bytes + n > D.maxBytes) return end("bytes")
        bytes += n
        lines++
        metrics.deviceLogLines.inc()
        res.write(ev)
        if (lines >= maxLines) end("lines")
      }
      try {
        stop = await link.streamLogs(onLine)
      } catch {
        release()
        throw errors.CM_ERR_NO_LINK(meterId, meterId) // it closed meanwhile
      }

      const startedAt = Date.now()
      const who = { meterId, reqId: req.id, remote: req.ip, seconds, maxLines }
      req.log.info(who, "device log stream started")
      metrics.deviceLogStreams.inc()
      reply.hijack()
      res.writeHead(200, {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache, no-transform",
        connection: "keep-alive",
        "x-accel-buffering": "no",
      })
      // a stream that ended should stay ended: an EventSource waits this long before it reconnects
      res.write(`retry: ${D.maxSeconds * 1000}\n: device log of ${meterId}\n\n`)

      const timer = setTimeout(() => end("time"), seconds * 1000)
      const heartbeat = setInterval(() => res.write(`: keep-alive\n\n`), D.heartbeatMs)
      let cancelOnClose = () => {}
      function end(reason: DeviceLogEnd) {
        if (ended) return
        ended = true
        openStreams.delete(end)
        clearTimeout(timer)
        clearInterval(heartbeat)
        cancelOnClose()
        stop?.() // the device stops streaming once no listener is left
        release()
        metrics.deviceLogStreams.dec()
        req.log.info({ ...who, reason, lines, bytes, ms: Date.now() - startedAt }, "device log stream ended")
        if (reason === "client_gone" || res.destroyed) return void res.destroy()
        res.end(sseEvent("end", { reason, lines, bytes }))
      }
      openStreams.add(end)
      // last: a link that closed meanwhile calls end at once
      cancelOnClose = link.onClose(() => end("link_closed"))
      res.on("close", () => end("client_gone"))
      res.on("error", () => end("client_gone"))
    },
  )
}
