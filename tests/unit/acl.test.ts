// The topic ACL the embedded broker enforces (the same rule as deploy/mosquitto/acl).
import { expect, test } from "vitest"
import { mayAccess } from "../../bridge/src/acl.js"

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
