// Bearer-token authentication (RFC 6750) with scoped tokens. Each guarded route needs one scope:
//   write  downlinks to meters: config, resend, key rotation
//   ops    the meter registry (keys included), dead letters, releases and their bytecode, update
//          windows (a fleet update)
//   read   every data read (meters, readings, consumption, alarms, SensorThings) — only when a read
//          token is configured; without one, reads are open data. Write and ops tokens read too.
// API_TOKEN (legacy) holds every scope. Tokens are compared as SHA-256 hashes with timingSafeEqual,
// so the comparison takes the same time whatever was sent. The hook runs onRequest: before the
// body is read or validated, so a request without the token gets 401 whatever its body.
import { createHash, timingSafeEqual } from "node:crypto"
import type { onRequestAsyncHookHandler } from "fastify"
import { errors } from "../errors.js"

export const SCOPES = ["read", "write", "ops"] as const
export type Scope = (typeof SCOPES)[number]

/** The configured tokens: one per scope, and `all` (API_TOKEN) for every scope. */
export type ApiTokens = Partial<Record<Scope | "all", string>>

const sha = (s: string) => createHash("sha256").update(s).digest()

/** Whether a read token is configured (reads are open data otherwise). */
export const readsGuarded = (t: ApiTokens) => t.read !== undefined

/** The onRequest hook of a route that needs `scope`; without a configured token it is refused. */
export function requireScope(tokens: ApiTokens, scope: Scope): onRequestAsyncHookHandler {
  const holders = scope === "read" ? [tokens.read, tokens.write, tokens.ops] : [tokens[scope]]
  const accepted = [...holders, tokens.all].filter((t): t is string => !!t).map(sha)
  return async (req) => {
    if (accepted.length === 0)
      throw errors.CM_ERR_UNAUTHORIZED(
        `this route needs a ${scope} token, and none is configured (API_TOKEN_${scope.toUpperCase()} or API_TOKEN)`,
      )
    const m = /^Bearer +(\S+) *$/i.exec(req.headers.authorization ?? "")
    const sent = m ? sha(m[1]) : undefined
    let ok = false
    // every candidate is compared, so the time does not say which one matched
    for (const a of accepted) if (sent && timingSafeEqual(sent, a)) ok = true
    if (!ok) throw errors.CM_ERR_UNAUTHORIZED(`missing or wrong bearer token (this route needs the ${scope} scope)`)
  }
}
