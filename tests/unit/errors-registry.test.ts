// Every CM_ERR_* code is declared once: the HTTP API's in bridge/src/errors.ts (code, message
// template, status), the frame rejection reasons in bridge/src/codec/frames.ts (REJECT_REASONS). The two
// lists do not share a code, and the README names each code and no other.
import { readFileSync } from "node:fs"
import { expect, test } from "vitest"
import { REJECT_REASONS } from "../../bridge/src/codec/frames.js"
import { ERROR_SCHEMA, errors } from "../../bridge/src/errors.js"

const http = Object.keys(errors)
const reasons = Object.keys(REJECT_REASONS)

test("each HTTP error is declared under its own code, with a client or server status", () => {
  for (const [key, make] of Object.entries(errors)) {
    expect(make.code, key).toBe(key)
    expect(make.statusCode, key).toBeGreaterThanOrEqual(400)
    expect(make.statusCode, key).toBeLessThan(600)
  }
  expect(ERROR_SCHEMA.properties.error.enum).toEqual(http)
})

test("HTTP errors and frame rejection reasons share no code", () => {
  expect(http.filter((c) => reasons.includes(c))).toEqual([])
})

test("the README names every code, and only declared ones", () => {
  const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8")
  const named = new Set(readme.match(/CM_ERR_[A-Z][A-Z_]*[A-Z]/g))
  expect([...http, ...reasons].filter((c) => !named.has(c))).toEqual([])
  expect([...named].filter((c) => !http.includes(c) && !reasons.includes(c))).toEqual([])
})
