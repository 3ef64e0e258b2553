// The dashboard's Rollouts panel (operations view) in Debian's Chromium, against a bridge on
// Mosquitto + PostgreSQL with a WSSK endpoint: rollouts created over the API appear with their
// state, stage, bar of meters ended, meters per state and the reason one halted; choosing one
// lists its meters with state and % written; the panel follows changes by polling (every 2 s) and
// stops when the view is left. It asks for a token (rollouts need the read scope) before reading.
import type { Browser, Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { axeViolations, launchChromium, shot, startWebStack, watchPage, type WebStack } from "../dashboard-util.js"
import { uid } from "../helpers.js"
import { bornMeters, hoursNotNow, registerRelease, releaseKeys } from "../rollout-util.js"

const TOKEN = `t-${uid("dro")}`
const auth = { authorization: `Bearer ${TOKEN}` }

describe("dashboard: the Rollouts panel in Chromium", () => {
  let stack: WebStack
  let browser: Browser
  let page: Page
  let seen: ReturnType<typeof watchPage>
  let rel: { id: number; size: number; version: string }
  const p = uid("dro").replace(/[^A-Za-z0-9]/g, "")
  const [a1, a2, a3, b1, b2] = ["a1", "a2", "a3", "b1", "b2"].map((s) => `${p}-${s}`)
  let running: number
  let halted: number
  let failedMeter: string

  beforeAll(async () => {
    const keys = releaseKeys()
    stack = await startWebStack({
      apiToken: TOKEN,
      extra: { wssk: { port: 0, host: "127.0.0.1" }, releasePublicKey: keys.publicPem },
    })
    browser = await launchChromium()
    rel = await registerRelease(stack.app, keys.privatePem, TOKEN, "9.2.0")
    await bornMeters(stack.store, { [a1]: "north", [a2]: "south", [a3]: null, [b1]: "north", [b2]: "south" })
    const create = async (payload: object) => {
      const res = await stack.app.inject({ method: "POST", url: "/rollouts", headers: auth, payload })
      expect(res.statusCode, res.body).toBe(201)
      return res.json().id as number
    }
    // outside their hours: no meter is started, so the states stay as set here
    const hours = hoursNotNow()
    running = await create({
      releaseId: rel.id,
      stages: [{ kind: "canary", share: 0.5 }, { kind: "all" }],
      meters: [a1, a2, a3],
      hours,
    })
    halted = await create({
      releaseId: rel.id,
      stages: [{ kind: "district", district: "north" }, { kind: "all" }],
      meters: [b1, b2],
      hours,
    })
    // what the runner does when a meter's update fails: the meter failed, the rollout halted
    failedMeter = (await stack.store.rolloutMeters(halted))[0].meterId
    const at = new Date()
    await stack.store.updateRolloutMeter(halted, failedMeter, ["pending"], { state: "transferring" }, at)
    await stack.store.updateRolloutMeter(
      halted,
      failedMeter,
      ["transferring"],
      { state: "failed", written: rel.size / 2, reason: "the runtime's hash is not the release's" },
      at,
    )
    await stack.store.setRolloutState(halted, ["running"], "halted", `meter ${failedMeter} failed`, at)
    page = await browser.newPage()
    seen = watchPage(page)
  }, 120_000)

  afterAll(async () => {
    await page?.close()
    await browser?.close()
    await stack?.stop()
  })

  const rollouts = () => seen.requests.filter((u) => /\/rollouts\?limit=/.test(u)).length
  const cells = (id: number) => page.locator(`#rollouts tr[data-rollout="${id}"]`).locator("th, td").allInnerTexts()

  test("asks for a token first, then lists the rollouts with state, stage, bar, counts and reason", async () => {
    await page.goto(`${stack.baseUrl}#/ops`)
    const token = page.getByLabel("API token (read scope)")
    await token.waitFor()
    expect(rollouts()).toBe(0) // nothing asked without a token
    await token.fill(TOKEN)
    await page.getByRole("button", { name: "Show rollouts" }).click()
    await page.locator(`#rollouts tr[data-rollout="${halted}"]`).waitFor()

    const r = await cells(running)
    expect(r[0]).toContain(`#${running}`)
    expect(r[1]).toContain(`citymeter_picow 9.2.0`)
    expect(r[1]).toContain(`release ${rel.id}`)
    expect(r.slice(2)).toEqual(["running", "1/2 canary 50%", expect.stringContaining("0/3 (0%)"), "pending 3", "—"])
    const h = await cells(halted)
    expect(h.slice(2)).toEqual([
      "halted",
      "1/2 district north",
      expect.stringContaining("1/2 (50%)"),
      "pending 1, failed 1",
      `meter ${failedMeter} failed`,
    ])
    const bar = page.locator(`#rollouts tr[data-rollout="${halted}"] progress`)
    expect(await bar.getAttribute("value")).toBe("1")
    expect(await bar.getAttribute("max")).toBe("2")
    expect(await bar.getAttribute("aria-label")).toBe(`Rollout ${halted}: 1 of 2 meters ended`)
    // newest first
    const order = await page.locator("#rollouts tbody tr").evaluateAll((rows) => rows.map((x) => x.dataset.rollout))
    expect(order).toEqual([String(halted), String(running)])
  })

  test("choosing a rollout lists its meters with state and % written", async () => {
    await page.locator(`#rollouts button[data-rollout="${running}"]`).click()
    await page.locator("#rollout-meter-table").waitFor()
    expect(await page.locator("#rollout-meters h3").innerText()).toBe(
      `Meters of rollout ${running} (citymeter_picow 9.2.0)`,
    )
    const rows = page.locator("#rollout-meter-table tbody tr")
    expect(await rows.evaluateAll((x) => x.map((r) => r.dataset.meter).sort())).toEqual([a1, a2, a3].sort())
    for (const t of await rows.allInnerTexts()) expect(t).toMatch(/\t[12]\tpending\t0%\t0\t—$/)
    expect(await page.locator(`#rollouts button[data-rollout="${running}"]`).getAttribute("aria-pressed")).toBe("true")

    await page.locator(`#rollouts button[data-rollout="${halted}"]`).click()
    const failed = page.locator(`#rollout-meter-table tr[data-meter="${failedMeter}"]`)
    await failed.waitFor()
    expect((await failed.locator("th, td").allInnerTexts()).slice(2)).toEqual([
      "failed",
      "50%",
      "0",
      "the runtime's hash is not the release's",
    ])
    expect(await axeViolations(page)).toEqual([])
    await shot(page, "ops-rollouts")
  })

  test("the panel follows changes every 2 s, and stops reading when the view is left", async () => {
    const before = rollouts()
    const res = await stack.app.inject({ method: "POST", url: `/rollouts/${running}/pause`, headers: auth })
    expect(res.statusCode, res.body).toBe(200)
    await expect.poll(async () => (await cells(running))[2], { timeout: 8000, interval: 250 }).toBe("paused")
    expect(rollouts()).toBeGreaterThan(before)
    await page.evaluate(() => (location.hash = "#/fleet"))
    await page.locator("#fleet-table").waitFor()
    const left = rollouts()
    await new Promise((r) => setTimeout(r, 4500))
    expect(rollouts()).toBe(left)
  })

  test("the page logged no console error and was refused nothing", async () => {
    expect(seen.errors.join("\n")).toBe("")
    expect(seen.bad).toEqual([])
    expect(seen.failed).toEqual([])
  })
})
