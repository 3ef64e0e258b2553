// The operations page's rates (web/src/ops.ts rateText): per second, or per minute when per second
// would round to 0 at a demo's rates (issue 26 item 6), so a flowing ingest never reads "0".
import { expect, test } from "vitest"
import { rateText } from "../../web/src/ops.js"

test("per second, per minute below 0.05/s, … before two reads", () => {
  expect(rateText(undefined)).toBe("…")
  expect(rateText(12.34)).toBe("12.3 per second")
  expect(rateText(0.05)).toBe("0.1 per second")
  expect(rateText(0.02)).toBe("1.2 per minute")
  expect(rateText(1 / 60)).toBe("1 per minute")
  expect(rateText(0)).toBe("0 per second")
})
