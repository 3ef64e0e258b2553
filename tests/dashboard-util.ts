// The dashboard's browser tests: a bridge listening on a free port, and Debian's Chromium driven
// by playwright-core (never a downloaded browser: CHROMIUM_PATH or /usr/bin/chromium).
import { existsSync } from "node:fs"
import { mkdir } from "node:fs/promises"
import { createRequire } from "node:module"
import { randomBytes } from "node:crypto"
import { fileURLToPath } from "node:url"
import { chromium, type Browser, type Page } from "playwright-core"
import type { ServiceConfig } from "../bridge/src/config.js"
import { startService } from "../bridge/src/service.js"
import { buildWeb } from "../scripts/build-web.js"
import { captureLog, dropSchema, stackServices, uid, type TestStack } from "./helpers.js"

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium"

/** Screenshots of the views (test artefacts; the current ones are copied to docs/). */
export const SHOTS =
  process.env.DASHBOARD_SHOTS ?? fileURLToPath(new URL("../test-artifacts/dashboard/", import.meta.url))

export const AXE_PATH = createRequire(import.meta.url).resolve("axe-core/axe.min.js")

export interface WebStack extends TestStack {
  baseUrl: string
}

/**
 * A bridge with the dashboard on Mosquitto + PostgreSQL (private schema), listening on a free port;
 * `extra`: more of the service's configuration (a WSSK endpoint and a release key, say).
 */
export async function startWebStack(o: { apiToken?: string; extra?: Partial<ServiceConfig> } = {}): Promise<WebStack> {
  await buildWeb()
  const { log, lines } = captureLog()
  const schema = `t_${randomBytes(6).toString("hex")}`
  const svc = await startService({
    demo: true,
    ...stackServices("mosquitto+postgres", schema),
    log,
    clientId: uid("bridge"),
    httpPort: 0,
    httpHost: "127.0.0.1",
    apiToken: o.apiToken,
    inactivityCheckMs: 1000,
    ...o.extra,
  })
  return {
    ...svc,
    kind: "mosquitto+postgres",
    lines,
    baseUrl: svc.httpUrl!.replace(/\/?$/, "/"),
    stop: async () => {
      await svc.stop()
      await dropSchema(schema)
    },
  }
}

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM))
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (.ci/run does), or set CHROMIUM_PATH`)
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // as root in CI: no sandbox; no background traffic to the (absent) internet
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic",
    ],
  })
}

/** What a page did that a test checks at the end: console errors, failed requests, every URL asked for. */
export function watchPage(page: Page) {
  const seen = { errors: [] as string[], requests: [] as string[], failed: [] as string[], bad: [] as string[] }
  page.on("response", (r) => {
    if (r.status() >= 400) seen.bad.push(`${r.status()} ${r.request().method()} ${r.url()}`)
  })
  page.on("console", (m) => {
    if (m.type() === "error") seen.errors.push(m.text())
  })
  page.on("pageerror", (e) => seen.errors.push(String(e)))
  page.on("request", (r) => seen.requests.push(r.url()))
  page.on("requestfailed", (r) => {
    // a stream closed by navigation is not a failure of the page
    if (!r.url().endsWith("/events")) seen.failed.push(`${r.url()} ${r.failure()?.errorText}`)
  })
  return seen
}

export async function shot(page: Page, name: string) {
  await mkdir(SHOTS, { recursive: true })
  await page.screenshot({ path: `${SHOTS}${name}.png`, fullPage: true })
}

/** axe-core's WCAG 2 A/AA checks on the page as it is now; returns the violations, described. */
export async function axeViolations(page: Page): Promise<string[]> {
  if (!(await page.evaluate(() => "axe" in window))) await page.addScriptTag({ path: AXE_PATH })
  const result = await page.evaluate(async () => {
    const axe = (
      window as unknown as {
        axe: {
          run(
            ctx: Document,
            o: object,
          ): Promise<{ violations: { id: string; impact: string; nodes: { target: string[] }[] }[] }>
        }
      }
    ).axe
    return axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } })
  })
  return result.violations.map(
    (v) =>
      `${v.id} (${v.impact}): ${v.nodes
        .map((n) => n.target.join(" "))
        .slice(0, 5)
        .join(", ")}`,
  )
}
