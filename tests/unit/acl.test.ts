// The topic ACL the embedded broker enforces (the same rule as deploy/mosquitto/acl).
import { expect, test } from "vitest"
import { checkPassword, hashPassword, mayAccess, mayUseClientId } from "../../bridge/src/acl.js"

const BRIDGE = "citymeter-bridge"

test("a meter writes only its own uplinks and reads only its own downlinks", () => {
  expect(mayAccess("m-a", BRIDGE, "write", "citymeter/v1/m-a/up/readings")).toBe(true)
  expect(mayAccess("m-a", BRIDGE, "write", "citymeter/v1/m-b/up/readings")).toBe(false)
  expect(mayAccess("m-a", BRIDGE, "write", "citymeter/v1/m-a/down/ack")).toBe(false)
  expect(mayAccess("m-a", BRIDGE, "write", "citymeter/v1/m-ab/up/readings")).toBe(false)
  expect(mayAccess("m-a", BRIDGE, "read", "citymeter/v1/m-a/down/#")).toBe(true)
  expect(mayAccess("m-a", BRIDGE, "read", "citymeter/v1/+/down/#")).toBe(false)
  expect(mayAccess("m-a", BRIDGE, "read", "citymeter/v1/m-a/up/readings")).toBe(false)
  expect(mayAccess("m-a", BRIDGE, "read", "#")).toBe(false)
  // a username that is not a meter id (wildcards, separators) gets nothing
  expect(mayAccess("+", BRIDGE, "write", "citymeter/v1/+/up/readings")).toBe(false)
  expect(mayAccess(undefined, BRIDGE, "write", "citymeter/v1/m-a/up/readings")).toBe(false)
})

test("the bridge user reads every uplink (also shared) and writes every downlink, not uplinks", () => {
  expect(mayAccess(BRIDGE, BRIDGE, "read", "citymeter/v1/+/up/+")).toBe(true)
  expect(mayAccess(BRIDGE, BRIDGE, "read", "$share/citymeter/citymeter/v1/+/up/+")).toBe(true)
  expect(mayAccess(BRIDGE, BRIDGE, "write", "citymeter/v1/m-a/down/config")).toBe(true)
  expect(mayAccess(BRIDGE, BRIDGE, "write", "citymeter/v1/m-a/up/readings")).toBe(false)
  expect(mayAccess(BRIDGE, BRIDGE, "read", "other/#")).toBe(false)
})

test("a meter's login connects only as its meter id; the bridge under any id but another login's", () => {
  // issue 26: a client taking `demo-001` (or the bridge's id) took over that session
  const logins = new Map([BRIDGE, "m-a", "m-b"].map((u) => [u, "$7$…"]))
  expect(mayUseClientId("m-a", "m-a", BRIDGE, logins)).toBe(true)
  expect(mayUseClientId("m-a", "m-b", BRIDGE, logins)).toBe(false)
  expect(mayUseClientId("m-a", "citymeter-bridge-4242", BRIDGE, logins)).toBe(false)
  expect(mayUseClientId("m-a", "", BRIDGE, logins)).toBe(false)
  expect(mayUseClientId(BRIDGE, "citymeter-bridge-4242", BRIDGE, logins)).toBe(true)
  expect(mayUseClientId(BRIDGE, "citymeter-watch-1", BRIDGE, logins)).toBe(true)
  expect(mayUseClientId(BRIDGE, BRIDGE, BRIDGE, logins)).toBe(true)
  expect(mayUseClientId(BRIDGE, "m-a", BRIDGE, logins)).toBe(false)
})

test("hashPassword writes Mosquitto's $7$ form, which checkPassword verifies, salted anew each time", () => {
  const hash = hashPassword("s3cret")
  expect(hash).toMatch(/^\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==$/)
  expect(checkPassword(hash, Buffer.from("s3cret"))).toBe(true)
  expect(checkPassword(hash, Buffer.from("s3cret "))).toBe(false)
  expect(hashPassword("s3cret")).not.toBe(hash)
})
