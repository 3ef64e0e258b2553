// Releases (issue 23 item 3): signed programs per board and version. Registering one needs the ops
// scope and the bridge's release key (RELEASE_PUBLIC_KEY); listing and reading one the read scope;
// the bytecode itself the ops scope. Nothing is stored unless every check passes (releases.ts
// releaseRefusal; a (board, version) registered with other bytes is CM_ERR_RELEASE_CONFLICT).
import type { FastifyInstance } from "fastify"
import { ERROR_RESPONSES, errors } from "../errors.js"
import {
  BOARD_PATTERN,
  releaseKeyId,
  releaseRefusal,
  SHA256_PATTERN,
  VERSION_PATTERN,
  type ReleaseManifest,
} from "../releases.js"
import type { ReleaseRow } from "../store/releases.js"
import { strictQuery, type RouteContext } from "./shared.js"

const BASE64 = "^[A-Za-z0-9+/]*={0,2}$"
/** Room in a release body beyond its bytecode's base64: the manifest, the signature, JSON. */
const BODY_SLACK = 4096

/** The body limit of POST /releases for a largest bytecode of `maxBytes`. */
export const releaseBodyLimit = (maxBytes: number) => Math.ceil(maxBytes / 3) * 4 + BODY_SLACK

export const releaseJson = (r: ReleaseRow) => ({
  id: r.id,
  board: r.board,
  version: r.version,
  firmware: `citymeter-fw ${r.version}`,
  sha256: r.sha256,
  size: r.size,
  signature: Buffer.from(r.signature).toString("base64"),
  keyId: r.keyId,
  createdAt: r.createdAt.toISOString(),
})

const manifestSchema = {
  type: "object",
  additionalProperties: false,
  required: ["board", "version", "sha256", "size"],
  properties: {
    board: { type: "string", pattern: BOARD_PATTERN.source, description: "a board of boards/*.board.json" },
    version: { type: "string", pattern: VERSION_PATTERN.source, description: "package.json's version at the build" },
    sha256: { type: "string", pattern: SHA256_PATTERN.source, description: "SHA-256 (hex) of the bytecode" },
    size: { type: "integer", minimum: 1, maximum: 0x7fffffff, description: "bytes; a multiple of 32" },
  },
} as const

const releaseSchema = {
  type: "object",
  properties: {
    id: { type: "integer" },
    board: { type: "string" },
    version: { type: "string" },
    firmware: { type: "string", description: "what a meter running it says in its Birth" },
    sha256: { type: "string" },
    size: { type: "integer" },
    signature: { type: "string", description: "base64 of the Ed25519 signature over the canonical manifest" },
    keyId: { type: "string", description: "the release key's id: SHA-256 of its SPKI, first 8 bytes, hex" },
    createdAt: { type: "string", format: "date-time" },
  },
} as const

const idParam = {
  type: "object",
  required: ["rid"],
  // path parameters are text (the API coerces no types): decimal digits
  properties: { rid: { type: "string", pattern: "^[1-9][0-9]{0,14}$" } },
} as const

interface ReleaseBody {
  manifest: ReleaseManifest
  signature?: string
  bytecode: string
}

export async function releaseRoutes(app: FastifyInstance, { store, requireScope, releases }: RouteContext) {
  app.post<{ Body: ReleaseBody }>(
    "/releases",
    {
      onRequest: requireScope.ops,
      bodyLimit: releaseBodyLimit(releases.maxBytes),
      schema: {
        tags: ["releases"],
        summary: "Register a signed release: its manifest, the signature under the release key, the bytecode",
        description:
          "201 when registered, 200 when the same (board, version) with the same bytes is registered already. " +
          "Refused, storing nothing: CM_ERR_RELEASE_UNSIGNED, CM_ERR_RELEASE_SIGNATURE, CM_ERR_RELEASE_MISMATCH " +
          "(bytes not the manifest's), CM_ERR_RELEASE_BOARD, CM_ERR_RELEASE_SIZE (not a multiple of 32), " +
          "CM_ERR_BODY_TOO_LARGE (RELEASE_MAX_BYTES), CM_ERR_RELEASE_CONFLICT (other bytes), CM_ERR_NO_RELEASE_KEY.",
        security: [{ bearer: [] }],
        body: {
          type: "object",
          additionalProperties: false,
          required: ["manifest", "bytecode"],
          properties: {
            manifest: manifestSchema,
            signature: { type: "string", maxLength: 128, pattern: BASE64, description: "base64, 64 bytes" },
            bytecode: { type: "string", minLength: 1, pattern: BASE64, description: "base64 of the .devs file" },
          },
        },
        response: { 200: releaseSchema, 201: releaseSchema, ...ERROR_RESPONSES },
      },
    },
    async (req, reply) => {
      const key = releases.publicKey
      if (!key) throw errors.CM_ERR_NO_RELEASE_KEY()
      const { manifest, signature } = req.body
      const bytecode = Buffer.from(req.body.bytecode, "base64")
      const refused = releaseRefusal({ manifest, signature, bytecode }, { ...releases, publicKey: key })
      if (refused) throw refused
      const out = await store.addRelease(
        { ...manifest, signature: Buffer.from(signature!, "base64"), keyId: releaseKeyId(key), bytecode },
        new Date(),
      )
      if (out.kind === "conflict")
        throw errors.CM_ERR_RELEASE_CONFLICT(manifest.board, manifest.version, out.release.id, out.release.sha256)
      return reply.status(out.kind === "created" ? 201 : 200).send(releaseJson(out.release))
    },
  )

  app.get<{ Querystring: { board?: string; limit?: number } }>(
    "/releases",
    {
      onRequest: requireScope.read,
      schema: {
        tags: ["releases"],
        summary: "Registered releases, newest first",
        security: [{ bearer: [] }],
        querystring: strictQuery({
          board: { type: "string", pattern: BOARD_PATTERN.source },
          limit: { type: "integer", minimum: 1, maximum: 1000, default: 100 },
        }),
        response: {
          200: { type: "object", properties: { releases: { type: "array", items: releaseSchema } } },
          ...ERROR_RESPONSES,
        },
      },
    },
    async (req) => ({
      releases: (await store.listReleases({ board: req.query.board, limit: req.query.limit ?? 100 })).map(releaseJson),
    }),
  )

  app.get<{ Params: { rid: string } }>(
    "/releases/:rid",
    {
      onRequest: requireScope.read,
      schema: {
        tags: ["releases"],
        summary: "One release",
        security: [{ bearer: [] }],
        params: idParam,
        response: { 200: releaseSchema, ...ERROR_RESPONSES },
      },
    },
    async (req) => {
      const r = await store.getRelease(Number(req.params.rid))
      if (!r) throw errors.CM_ERR_NOT_FOUND(`release ${req.params.rid}`)
      return releaseJson(r)
    },
  )

  app.get<{ Params: { rid: string } }>(
    "/releases/:rid/bytecode",
    {
      onRequest: requireScope.ops,
      schema: {
        tags: ["releases"],
        summary: "A release's bytecode, exactly as registered (application/octet-stream; ETag: its SHA-256)",
        security: [{ bearer: [] }],
        params: idParam,
        response: ERROR_RESPONSES,
      },
    },
    async (req, reply) => {
      const r = await store.getRelease(Number(req.params.rid))
      const bytes = r && (await store.releaseBytecode(r.id))
      if (!r || !bytes) throw errors.CM_ERR_NOT_FOUND(`release ${req.params.rid}`)
      reply.header("content-type", "application/octet-stream")
      reply.header("etag", `"${r.sha256}"`)
      reply.header("content-disposition", `attachment; filename="${r.board}-${r.version}.devs"`)
      return reply.send(Buffer.from(bytes))
    },
  )
}
