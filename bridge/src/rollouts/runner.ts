// The rollout runner (issue 23 items 4-5): takes the running rollouts' pending meters through an
// update, a few at a time. Per meter: a sealed UpdateWindow downlink takes it off MQTT and arms the
// runtime's own link (firmware/update-window.ts); over the link, 0x93 says what it runs (the
// rollback image is the release with that hash); the deploy writes the release and the runtime's
// 0x93 must answer its hash; then the meter's next Birth must report the release's version within
// verifyS. Otherwise the release it ran before goes back over the link, and the rollout halts at
// that stage. Every state is in the data tier first (store/rollouts.ts), so a bridge that restarts
// resumes: a transfer starts again, a verification or rollback goes on.
import type { Logger } from "pino"
import { encodeDownlink } from "../codec/downlink.js"
import type { Metrics } from "../metrics.js"
import { releaseFor } from "../releases.js"
import type { Downlink } from "../routes/shared.js"
import type { MeterUpdateState, RolloutMeterRow, RolloutRow } from "../store/rollouts.js"
import type { MeterRow, Store } from "../store/store.js"
import type { WsskEndpoint } from "../wssk/endpoint.js"
import type { WsskLink } from "../wssk/link.js"
import { connectionString } from "../wssk/protocol.js"
import { IN_FLIGHT, blockerOf, firmwareOf, inHours, nextStep, type Blocker } from "./plan.js"

export const ROLLOUT_TIMING = {
  /** How often running rollouts are looked at, ms. */
  tickMs: 1000,
  /** How long the link may take to come up after the window is sent, or back after it was lost, ms. */
  linkWaitMs: 45_000,
  /** Transfers (and rollbacks) tried per meter before it fails. */
  attempts: 3,
  /** How often the registry is read for the meter's Birth while verifying, ms. */
  birthPollMs: 500,
  /** A downlink the broker has not taken by then failed, ms. */
  downlinkMs: 10_000,
  /** The pause before a transfer or rollback is tried again (the broker or the link away), ms. */
  retryMs: 3000,
}
export type RolloutTiming = typeof ROLLOUT_TIMING

export interface RunnerOptions {
  store: Store
  wssk: WsskEndpoint
  downlink: Downlink
  /** ws://host:port where meters reach the endpoint (WSSK_PUBLIC_URL): their connection strings name it. */
  wsskUrl: string
  log: Logger
  metrics?: Metrics
  timing?: Partial<RolloutTiming>
}

/** Meter rows read at once (store/rollouts.ts rolloutMeters). */
const ROWS_PAGE = 5000

class Stopped extends Error {}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
/** A meter's update ends: its last state, and why. */
class Ended extends Error {
  constructor(
    readonly state: "done" | "failed" | "rolled_back" | "skipped",
    why: string,
    /** The rollout stops at this stage (the release's fault, not the meter's reach). */
    readonly halt = false,
  ) {
    super(why)
  }
}

export class RolloutRunner {
  private readonly t: RolloutTiming
  private readonly jobs = new Map<string, Promise<void>>()
  private timer?: NodeJS.Timeout
  private ticking = false
  private stopping = false
  private stop$!: Promise<never>
  private stopNow!: (e: Error) => void

  constructor(private readonly o: RunnerOptions) {
    this.t = { ...ROLLOUT_TIMING, ...o.timing }
    this.stop$ = new Promise<never>((_r, reject) => (this.stopNow = reject))
    this.stop$.catch(() => {})
  }

  /** Resumes the updates a previous bridge left in flight, then looks at the rollouts every tickMs. */
  async start() {
    await this.resume().catch((e) => this.o.log.error({ err: (e as Error).message }, "rollouts: resume failed"))
    this.timer = setInterval(() => void this.tick(), this.t.tickMs)
  }

  /** Stops looking; updates in flight stop at their next wait, and the next start resumes them. */
  async stop() {
    this.stopping = true
    clearInterval(this.timer)
    this.stopNow(new Stopped("stopping"))
    await Promise.allSettled([...this.jobs.values()])
  }

  /** Meters with an update in hand in this process. */
  get inFlight() {
    return this.jobs.size
  }

  private async resume() {
    const { store } = this.o
    for (const r of await store.rolloutsIn(["running", "paused", "halted", "cancelled"]))
      for (const state of IN_FLIGHT)
        for (const row of await this.rows(r.id, state)) {
          this.o.log.info({ rollout: r.id, meterId: row.meterId, state }, "rollouts: resuming an update in flight")
          this.launch(r, row, state)
        }
  }

  /** One look at every running rollout; never two at once. */
  async tick() {
    if (this.ticking || this.stopping) return
    this.ticking = true
    try {
      for (const r of await this.o.store.rolloutsIn(["running"])) await this.drive(r)
    } catch (e) {
      this.o.log.warn({ err: (e as Error).message }, "rollouts: a look at the rollouts failed; next tick")
    } finally {
      this.ticking = false
    }
  }

  private async drive(r: RolloutRow) {
    const { store, log } = this.o
    const now = new Date()
    if (!inHours(now, r.hours)) return
    const rows = await this.rows(r.id)
    const inFlight = rows.filter((x) => IN_FLIGHT.has(x.state)).length
    // at its concurrency a rollout can neither start a meter nor end a stage: no registry reads
    if (inFlight >= r.concurrency) return
    const pending = rows.filter((x) => x.state === "pending" && x.stage <= r.stage)
    const meters = pending.length ? await store.listMeters() : []
    const byId = new Map(meters.map((m) => [m.meterId, m]))
    const blockers = new Map<string, Blocker>()
    for (const row of pending) {
      const m = byId.get(row.meterId)
      let b = blockerOf(m, r.board, true, 0)
      if (!b) {
        const key = await store.linkKey(row.meterId)
        const open = key ? await store.alarms({ meterId: row.meterId, open: true, limit: 1 }) : []
        b = blockerOf(m, r.board, !!key, open.length)
      }
      if (b?.kind === "never") {
        if (await store.updateRolloutMeter(r.id, row.meterId, ["pending"], { state: "skipped", reason: b.why }, now))
          this.o.metrics?.rolloutMeters.inc({ outcome: "skipped" })
        row.state = "skipped"
      } else blockers.set(row.meterId, b)
    }
    const step = nextStep(rows, r.stage, r.stages.length, (x) => !blockers.get(x.meterId), r.concurrency - inFlight)
    for (const row of step.start) {
      if (this.jobs.has(row.meterId)) continue
      const claimed = await store.updateRolloutMeter(
        r.id,
        row.meterId,
        ["pending"],
        { state: "transferring", attempts: row.attempts + 1, written: 0, reason: null, started: true },
        new Date(),
      )
      if (claimed) this.launch(r, { ...row, attempts: row.attempts + 1 }, "transferring")
    }
    if (step.advance && (await store.advanceStage(r.id, r.stage, new Date())))
      log.info({ rollout: r.id, stage: r.stage + 2, of: r.stages.length }, "rollout: next stage")
    // a meter that waits says why
    for (const row of pending) {
      const b = blockers.get(row.meterId)
      const why = b ? `waiting: ${b.why}` : null
      if (b && row.state === "pending" && row.reason !== why)
        await store.updateRolloutMeter(r.id, row.meterId, ["pending"], { reason: why }, now)
    }
    if (step.finish) {
      if (await store.setRolloutState(r.id, ["running"], "done", null, new Date()))
        log.info({ rollout: r.id, release: r.releaseId }, "rollout done")
    }
  }

  /**
   * Every meter row of a rollout (optionally of one state), page by page: a rollout may hold more
   * meters than one read of rolloutMeters returns, and a meter past that page must still be started
   * and must keep the rollout from ending.
   */
  private async rows(id: number, state?: MeterUpdateState): Promise<RolloutMeterRow[]> {
    const all: RolloutMeterRow[] = []
    for (;;) {
      const page = await this.o.store.rolloutMeters(id, { state, after: all.at(-1)?.meterId, limit: ROWS_PAGE })
      all.push(...page)
      if (page.length < ROWS_PAGE) return all
    }
  }

  private launch(r: RolloutRow, row: RolloutMeterRow, from: MeterUpdateState) {
    if (this.jobs.has(row.meterId)) return
    this.o.metrics?.rolloutInFlight.inc()
    const job = this.update(r, row, from)
      .catch((e) => this.o.log.error({ err: (e as Error).message, meterId: row.meterId }, "rollouts: update failed"))
      .finally(() => {
        this.jobs.delete(row.meterId)
        this.o.metrics?.rolloutInFlight.dec()
      })
    this.jobs.set(row.meterId, job)
  }

  /** One meter through the rest of its update, from the state it is in. */
  private async update(r: RolloutRow, row: RolloutMeterRow, from: MeterUpdateState) {
    const { store, log } = this.o
    const id = row.meterId
    let state = from
    const to = async (next: MeterUpdateState, patch: { reason?: string | null; written?: number } = {}) => {
      await store.updateRolloutMeter(r.id, id, [state], { state: next, ...patch }, new Date())
      state = next
    }
    try {
      const meter = await this.meter(id)
      const { release, bytecode } = await releaseFor(store, meter, r.releaseId)
      let since = from === "verifying" ? row.updatedAt.getTime() : Date.now()
      let deployed = from !== "transferring"
      if (from === "transferring") {
        if (meter.firmware === firmwareOf(release.version))
          throw new Ended("done", `already runs ${release.version} (its Birth)`)
        deployed = await this.transfer(r, row, bytecode, release.sha256, (n) => (row.written = n))
        since = Date.now()
        await to("verifying", { written: bytecode.length })
      }
      if (state === "verifying") {
        // with nothing written, the meter is back on MQTT (its Birth) only when its window ends
        const waitMs = r.verifyS * 1000 + (deployed ? 0 : r.windowS * 1000)
        if (await this.birth(id, firmwareOf(release.version), since, waitMs))
          throw new Ended("done", `the hash and the Birth are ${release.version}'s`)
        const why = `no Birth of ${release.version} within ${Math.round(waitMs / 1000)} s of its deploy`
        await this.halt(r, `meter ${id}: ${why}; rolling it back`)
        await to("rolling_back", { reason: why, written: 0 })
      }
      await this.rollback(r, id, row.fromRelease)
    } catch (e) {
      if (e instanceof Stopped) return // resumed by the next start
      const end = e instanceof Ended ? e : new Ended("failed", (e as Error).message)
      await store.updateRolloutMeter(r.id, id, [state], { state: end.state, reason: end.message }, new Date())
      this.o.metrics?.rolloutMeters.inc({ outcome: end.state })
      log.info({ rollout: r.id, meterId: id, outcome: end.state, why: end.message }, "rollout: meter ended")
      if (end.halt) await this.halt(r, `meter ${id}: ${end.message}`)
    }
  }

  /**
   * Writes the release: up to `attempts` times, each with the link up (sent an update window if
   * need be). Records the rollback image before the first byte. Whether anything was written
   * (false: the meter already ran the image).
   */
  private async transfer(
    r: RolloutRow,
    row: RolloutMeterRow,
    image: Uint8Array,
    sha256: string,
    progress: (n: number) => void,
  ): Promise<boolean> {
    const { store, log } = this.o
    const id = row.meterId
    let fromRelease = row.fromRelease
    let began = false
    let why = ""
    for (let attempt = 1; attempt <= this.t.attempts; attempt++) {
      if (attempt > 1) {
        row.attempts++
        await store.updateRolloutMeter(r.id, id, ["transferring"], { attempts: row.attempts, reason: why }, new Date())
        await this.race(sleep(this.t.retryMs))
      }
      try {
        const link = await this.linkOf(await this.meter(id), r.windowS)
        if (!link) {
          why = `no WSSK link within ${this.t.linkWaitMs / 1000} s`
          continue
        }
        const running = (await link.hash()).toString("hex")
        if (running === sha256) return began
        if (fromRelease === null) {
          fromRelease = (await store.releaseBySha(r.board, running)) ?? null
          if (fromRelease === null)
            throw new Ended(
              "skipped",
              `it runs sha256 ${running.slice(0, 12)}…, no registered release: no rollback image`,
            )
          await store.updateRolloutMeter(r.id, id, ["transferring"], { fromRelease }, new Date())
          row.fromRelease = fromRelease
        }
        began = true
        const t0 = performance.now()
        let lastWrite = 0
        await this.race(
          this.o.wssk.deploy(id, image, (n, total) => {
            progress(n)
            // the progress in the data tier about every tenth of the image, for the API and dashboard
            if (n === total || n - lastWrite >= total / 10) {
              lastWrite = n
              void store.updateRolloutMeter(r.id, id, ["transferring"], { written: n }, new Date()).catch(() => {})
            }
          }),
        )
        this.o.metrics?.rolloutDeploySeconds.observe((performance.now() - t0) / 1000)
        log.info(
          { rollout: r.id, meterId: id, bytes: image.length, ms: Math.round(performance.now() - t0) },
          "rollout: deployed",
        )
        return true
      } catch (e) {
        if (e instanceof Ended || e instanceof Stopped) throw e
        why = (e as Error).message
        log.warn({ rollout: r.id, meterId: id, attempt, err: why }, "rollout: transfer failed")
      }
    }
    // a transfer cut short leaves the runtime without a program: the release is at fault only if it began
    throw new Ended("failed", `transfer failed ${this.t.attempts} times: ${why}`, began)
  }

  /** Puts the release the meter ran before back, and waits for its Birth. */
  private async rollback(r: RolloutRow, id: string, fromRelease: number | null) {
    if (fromRelease === null) throw new Ended("failed", "no rollback image recorded", true)
    const { release, bytecode } = await releaseFor(this.o.store, await this.meter(id), fromRelease)
    for (let attempt = 1; attempt <= this.t.attempts; attempt++) {
      if (attempt > 1) await this.race(sleep(this.t.retryMs))
      try {
        const link = await this.linkOf(await this.meter(id), r.windowS)
        if (!link) continue
        await this.race(this.o.wssk.deploy(id, bytecode))
      } catch (e) {
        if (e instanceof Ended) throw e
        if (e instanceof Stopped) throw e
        this.o.log.warn({ meterId: id, attempt, err: (e as Error).message }, "rollout: rollback transfer failed")
        continue
      }
      const since = Date.now()
      if (await this.birth(id, firmwareOf(release.version), since, r.verifyS * 1000))
        throw new Ended("rolled_back", `rolled back to ${release.version}`, true)
      throw new Ended("failed", `rolled back to ${release.version}, and no Birth of it came`, true)
    }
    throw new Ended("failed", `no link to roll it back to ${release.version}`, true)
  }

  /** The meter's link: up already, or after an update window sent to it (it must be on MQTT for that). */
  private async linkOf(meter: MeterRow, windowS: number): Promise<WsskLink | undefined> {
    const { wssk, store } = this.o
    const up = wssk.link(meter.meterId)
    if (up) return up
    if (meter.online && meter.seal.key) {
      const key = await store.linkKey(meter.meterId)
      if (!key) throw new Ended("skipped", "no WSSK link key")
      const conn = connectionString(this.o.wsskUrl, meter.meterId, key)
      if (Buffer.byteLength(conn) > 120) throw new Ended("skipped", "its connection string is over the runtime's 120 B")
      const payload = encodeDownlink({ update: { conn, windowS } }, meter.seal.key)
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise<void>((_r, reject) => {
        timer = setTimeout(() => reject(new Error("the broker took no downlink")), this.t.downlinkMs)
      })
      await this.race(Promise.race([this.o.downlink(meter.meterId, "update", payload), timeout])).finally(() =>
        clearTimeout(timer),
      )
    }
    return this.race(wssk.waitLink(meter.meterId, this.t.linkWaitMs))
  }

  /** Whether the meter's Birth reports `firmware`, born after `sinceMs`, within `waitMs`. */
  private async birth(id: string, firmware: string, sinceMs: number, waitMs: number) {
    const until = Date.now() + waitMs
    for (;;) {
      const m = await this.o.store.getMeter(id)
      if (m?.firmware === firmware && m.bornAt && m.bornAt.getTime() >= sinceMs - 1000) return true
      if (Date.now() >= until) return false
      await this.race(new Promise((r) => setTimeout(r, this.t.birthPollMs)))
    }
  }

  private async halt(r: RolloutRow, why: string) {
    if (await this.o.store.setRolloutState(r.id, ["running", "paused"], "halted", why, new Date())) {
      this.o.metrics?.rolloutHalted.inc()
      this.o.log.warn({ rollout: r.id, stage: r.stage + 1, why }, "rollout halted")
    }
  }

  private async meter(id: string) {
    const m = await this.o.store.getMeter(id)
    if (!m) throw new Ended("skipped", "not in the registry")
    return m
  }

  private race<T>(p: Promise<T>): Promise<T> {
    return Promise.race([p, this.stop$])
  }
}
