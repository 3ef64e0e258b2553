// A job run every so often in the bridge (inactivity, night flow): at start, then each `everyMs`;
// a run still going when the next is due is not piled up behind it (a slow data tier). stop()
// ends the timer and waits for the run in progress.
export interface Periodic {
  stop(): Promise<void>
}

export function startPeriodic(run: () => Promise<unknown>, everyMs: number): Periodic {
  let running: Promise<unknown> | undefined
  const tick = () => {
    if (running) return
    running = run().finally(() => (running = undefined))
  }
  const timer = setInterval(tick, everyMs)
  timer.unref()
  tick()
  return {
    stop: async () => {
      clearInterval(timer)
      await running
    },
  }
}
