// Bearer-token authentication (RFC 6750) for routes that write, send downlinks or expose dead
// letters. It runs as an onRequest hook: before the body is read or validated, so a request
// without the token gets 401 whatever its body (issue 9).
import { createHash, timingSafeEqual } from "node:crypto"
import type { onRequestAsyncHookHandler } from "fastify"
import { errors } from "../errors.js"

const sha = (s: string) => createHash("sha256").update(s).digest()

/** The onRequest hook of guarded routes; without a configured token they are refused. */
export function bearerAuth(apiToken: string | undefined): onRequestAsyncHookHandler {
  const expected = apiToken ? sha(apiToken) : undefined
  return async (req) => {
    if (!expected) throw errors.CM_ERR_UNAUTHORIZED("this route is disabled: API_TOKEN is not set")
    const m = /^Bearer +(\S+) *$/i.exec(req.headers.authorization ?? "")
    // hashes of equal length: the comparison takes the same time whatever was sent
    if (!m || !timingSafeEqual(sha(m[1]), expected)) throw errors.CM_ERR_UNAUTHORIZED("missing or wrong bearer token")
  }
}
