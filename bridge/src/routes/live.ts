// Live updates for open dashboards: GET /events, server-sent events (WHATWG HTML
// §9.2). Each client gets what ingest committed, at most every FLUSH_MS: readings coalesced to
// the newest per meter, alarms and meter changes in order. A client that falls behind by more
// than MAX_PENDING events gets `resync` (reload what you show) instead of an unbounded queue.
// At most limits.liveMaxClients streams at once (503 CM_ERR_BUSY past it), and a stream
// whose socket holds more than limits.liveMaxBufferBytes unread is closed: the page reconnects
// (retry: 1000) and reloads, rather than the bridge buffering for a reader that does not read.
import type { FastifyInstance } from "fastify"
import { ERROR_RESPONSES, errors } from "../errors.js"
import type { LiveEvent } from "../live.js"
import { alarmJson } from "./alarms.js"
import type { RouteContext } from "./shared.js"

/** How often a client's events are written: well inside the page's one-second budget. */
export const FLUSH_MS = 100
/** Pending non-reading events per client beyond which it is told to reload instead. */
export const MAX_PENDING = 5000
/** A comment line this often keeps proxies from closing an idle stream. */
const HEARTBEAT_MS = 15_000

export async function liveRoutes(app: FastifyInstance, { live, limits, metrics }: RouteContext) {
  /** Each open stream, as the function that ends it. */
  const openStreams = new Set<() => void>()
  // streams never go idle: end them before the server waits for its connections to close
  app.addHook("preClose", async () => {
    for (const end of openStreams) end()
  })
  app.get(
    "/events",
    {
      schema: {
        tags: ["dashboard"],
        summary: "Live events (text/event-stream): readings, alarms and meter status as ingest commits them",
        description:
          "Server-sent events. `event: reading` data {meterId, reading} (the newest reading of a meter, at most one " +
          `per meter every ${FLUSH_MS} ms); \`event: alarm\` data {alarm} (an alarm edge as GET /alarms gives it; ` +
          "bridge alarms and acknowledgements carry no stable key: reload them); `event: meter` data {meter} (changed " +
          "fields of a meter: online, inactive, lastSeen, firmware, board, boot, queued, dropped, location); " +
          "`event: resync` when the client fell behind: reload. Events of the frames this bridge ingests.",
        produces: ["text/event-stream"],
        response: ERROR_RESPONSES,
      },
    },
    async (req, reply) => {
      if (!live) return reply.status(204).send()
      if (openStreams.size >= limits.liveMaxClients) {
        metrics.httpShed.inc({ reason: "live_clients" })
        throw errors.CM_ERR_BUSY(`the bridge serves at most ${limits.liveMaxClients} live-event streams at once`)
      }
      reply.hijack()
      const res = reply.raw
      res.writeHead(200, {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache, no-transform",
        connection: "keep-alive",
        "x-accel-buffering": "no",
      })
      res.write(`retry: 1000\n: connected\n\n`)
      let readings = new Map<string, LiveEvent>()
      let others: LiveEvent[] = []
      let overflow = false
      let timer: NodeJS.Timeout | undefined
      /** Writes unless the client leaves too much unread: then the stream is closed, not buffered. */
      const write = (text: string) => {
        if (res.writableLength > limits.liveMaxBufferBytes) {
          metrics.httpShed.inc({ reason: "live_slow" })
          close()
          res.destroy()
          return
        }
        res.write(text)
      }
      const flush = () => {
        timer = undefined
        let out = ""
        if (overflow) {
          out += `event: resync\ndata: {}\n\n`
          overflow = false
        }
        for (const e of [...others, ...readings.values()]) {
          // alarms as GET /alarms gives them (type names, units, ISO times)
          const data = e.kind === "alarm" ? { alarm: alarmJson(e.alarm) } : { ...e, kind: undefined }
          out += `event: ${e.kind}\ndata: ${JSON.stringify(data)}\n\n`
        }
        readings = new Map()
        others = []
        if (out) write(out)
      }
      const unsubscribe = live.subscribe((events) => {
        for (const e of events) {
          if (e.kind === "reading") readings.set(e.meterId, e)
          else if (others.length < MAX_PENDING) others.push(e)
          else overflow = true
        }
        if (overflow) others = []
        timer ??= setTimeout(flush, FLUSH_MS)
      })
      const heartbeat = setInterval(() => write(`: keep-alive\n\n`), HEARTBEAT_MS)
      const close = () => {
        openStreams.delete(end)
        unsubscribe()
        clearInterval(heartbeat)
        if (timer) clearTimeout(timer)
      }
      const end = () => {
        close()
        res.end()
      }
      openStreams.add(end)
      req.raw.on("close", close)
      res.on("error", close)
    },
  )
}
