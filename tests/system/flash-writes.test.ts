// What the firmware keeps in flash and how often it writes there (issue 20), read from the flash
// image of the real firmware in the simulator's VM (testkit/fstor.ts reads DeviceScript's settings
// store as jd_fstor.c lays it out). Every record is a power-cut window, and every byte must be in
// the budget `citymeter build` checks (bridge/src/tunables/storage-budget.ts storageBudget).
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, test } from "vitest"
import { TUNABLE_BY_KEY } from "../../bridge/src/tunables/schema.js"
import {
  boardBankBytes,
  budgetedKeys,
  entryBytes,
  STORAGE,
  usableBankBytes,
} from "../../bridge/src/tunables/storage-budget.js"
import { DEFAULT_BOARD, SimMeter } from "../../sim/src/meter.js"
import { FstorWriteCounter, readFstor } from "../../testkit/fstor.js"
import { freePort } from "../../testkit/infra.js"
import { uid, waitFor } from "../helpers.js"

const framesIn = (m: SimMeter) => m.lines.filter((l) => /citymeter: frame boot=/.test(l)).length
/** The settings keys the firmware writes, without the program's entry: the simulator deploys the
 * program at every start, a board has it flashed once. */
const firmwareRecords = (c: FstorWriteCounter) => Object.fromEntries([...c.records].filter(([k]) => k !== "*prog"))

describe("flash writes", () => {
  test("a boot writes one record, a frame one (its slot carries the queue's state); the store holds only what the budget counts, at the cost it counts", async () => {
    const counter = new FstorWriteCounter()
    /** The records written so far, by key, when the firmware logged each frame (after its writes). */
    const atFrame: Map<string, number>[] = []
    const meter = new SimMeter({
      log: (l) => {
        if (/citymeter: frame boot=/.test(l)) atFrame.push(new Map(counter.records))
      },
      meterId: uid("writes"),
      flashFile: join(mkdtempSync(join(tmpdir(), "cm-flash-")), "flash.bin"),
      // no broker: frames stay queued (acks cost no write anyway)
      // alarms off: a frame here is a readings frame (an alarm frame costs the same one record)
      settings: { MQTT_HOST: "127.0.0.1", MQTT_PORT: await freePort(), INTERVAL_S: 1, BATCH: 1, BURST_MLMIN: 1e9 },
      onFlashSave: (image) => counter.saved(image),
    })
    meter.setElectricity({ energyWh: 10, powerW: 100, voltageDv: 2300 })
    meter.setPressure(300_000)
    meter.setWaterFlow(30_000)
    try {
      await meter.start()
      await waitFor("first frame", async () => framesIn(meter) >= 1, 30_000)
      await meter.stop()

      // a reboot: the settings deployed again are unchanged (the store skips an equal value,
      // jd_fstor.c line 300); the firmware counts its boot
      counter.reset()
      meter.lines.length = 0
      await meter.start()
      await meter.waitForLine(/citymeter: queue \d+ frames/, 30_000)
      const atBoot = firmwareRecords(counter)
      // per frame: between the 2nd and the 10th frame of this boot
      counter.reset()
      atFrame.length = 0
      await waitFor("10 frames", async () => atFrame.length >= 10, 30_000)
      await meter.stop()
      const frames = 8
      const perFrame: Record<string, number> = {}
      for (const [k, v] of atFrame[9]) {
        const n = v - (atFrame[1].get(k) ?? 0)
        if (n && k !== "*prog") perFrame[k] = n
      }
      const slots = Object.entries(perFrame).filter(([k]) => /^:q\d+$/.test(k))
      const perDay = 86_400 / (TUNABLE_BY_KEY.get("INTERVAL_S")!.default * TUNABLE_BY_KEY.get("BATCH")!.default)
      console.log(
        `flash writes: boot ${JSON.stringify(atBoot)}; ${frames} frames ${JSON.stringify(perFrame)}; ` +
          `${counter.collections} collections; at the defaults ${perDay} records a day plus one a boot`,
      )
      expect(atBoot).toEqual({ ":BOOT": 1 })
      // one slot per frame, nothing else (the two-record layout wrote a state record "st" too)
      expect(slots.reduce((n, [, v]) => n + v, 0)).toBe(frames)
      expect(Object.keys(perFrame)).toEqual(slots.map(([k]) => k))
      expect(Object.values(perFrame).reduce((n, v) => n + v, 0)).toBe(frames)

      // the store as the runtime left it: the Pico W's bank, every byte accounted for
      const bank = readFstor(meter.flashImage)!
      expect(bank.bankBytes).toBe(boardBankBytes(DEFAULT_BOARD))
      const all = bank.entries.reduce((n, e) => n + e.cost, 0)
      expect(all + bank.freeBytes).toBe(usableBankBytes(bank.bankBytes))
      const budget = budgetedKeys()
      for (const e of bank.live.values()) {
        expect(budget.has(e.key), `${e.key} is in the budget`).toBe(true)
        const max = budget.get(e.key)!
        // a large key's bytes are in the data pages: its entry only
        expect(e.cost, e.key).toBe(max < 0 ? STORAGE.entryHeaderBytes : entryBytes(e.size))
        if (max >= 0) expect(e.size, e.key).toBeLessThanOrEqual(max)
      }
    } finally {
      await meter.stop()
    }
  }, 90_000)
})
