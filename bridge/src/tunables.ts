// The meter tunables of proto/tunables.json, for Node: the CLI (provision, sim), the bridge's
// Config downlink validation and the tests. The firmware gets its copy generated
// (scripts/gen-tunables.ts → firmware/gen/tunables.ts), and implements the same checks (firmware/config.ts).
// Pulse constants past the board's pulse input limits, and a BATCH or queue whose flash footprint
// would overflow the settings store, are refused at config time, with the reason. The schema is in
// tunables/schema.ts, the pulse input limits in tunables/pulse-limits.ts, the settings bank's
// budget in tunables/storage-budget.ts; here, the one check every consumer calls and the README table.
import { TUNABLES, TUNABLE_BY_NAME, type TunableValues } from "./tunables/schema.js"
import {
  PULSE_LIMITS,
  PULSE_SAMPLE_MS,
  maxCountableFlowLmin,
  maxCountablePowerW,
  maxPulseHz,
  pulseLimitErrors,
  round1,
} from "./tunables/pulse-limits.js"
import {
  SIM_BANK_BYTES,
  STORAGE,
  batchSlotError,
  boardBankBytes,
  entryBytes,
  queueCapacity,
  queueFootprintError,
  repoBoardBanks,
  storageBudget,
  usableBankBytes,
  worstFrameBytes,
} from "./tunables/storage-budget.js"

/**
 * Everything wrong with a set of tunable values: out of bounds, pulses the polling cannot count, a
 * BATCH that outgrows a flash slot, and, given a board (null: unknown), a queue over its bank.
 */
export function tunableErrors(v: TunableValues, board?: string | null): string[] {
  const out: string[] = []
  for (const t of TUNABLES) {
    const x = v[t.name]
    if (!Number.isInteger(x) || x < t.min || x > t.max)
      out.push(`${t.key} must be an integer in ${t.min}..${t.max} ${t.unit} (got ${x})`)
  }
  if (out.length) return out
  out.push(...pulseLimitErrors(v, board))
  const slot = batchSlotError(v.batch)
  if (slot) out.push(slot)
  if (board !== undefined) {
    const bank = queueFootprintError(board ?? "an unknown board", boardBankBytes(board))
    if (bank) out.push(bank)
  }
  return out
}

/** The README's tunables table and the limits that follow (npm run gen writes it between the markers). */
export const README_BEGIN = "<!-- tunables:begin (generated from proto/tunables.json by npm run gen) -->"
export const README_END = "<!-- tunables:end -->"
export function readmeTable(): string {
  const rows = TUNABLES.map(
    (t) => `| \`${t.key}\` | \`${t.field}\` | ${t.default} | ${t.min}..${t.max} | ${t.unit} | ${t.meaning} |`,
  )
  const ms = TUNABLE_BY_NAME.pulseMs.default
  const flows = [1, 10, 450].map((k) => `${k} pulse(s)/L up to ${round1(maxCountableFlowLmin(k, ms))} L/min`)
  const powers = [1000, 10000].map((k) => `${k} imp/kWh up to ${Math.floor(maxCountablePowerW(k, ms))} W`)
  const batches = Array.from({ length: TUNABLE_BY_NAME.batch.max + 1 }, (_, i) => worstFrameBytes(i + 1))
  const b = storageBudget(SIM_BANK_BYTES)
  const banks = [...repoBoardBanks(), { board: "simulator", bankBytes: SIM_BANK_BYTES }].map(
    ({ board, bankBytes }) =>
      `${board} ${bankBytes} B, ${usableBankBytes(bankBytes)} B usable (${storageBudget(bankBytes).freeBytes} B spare; ${queueCapacity(bankBytes)} slots would fit)`,
  )
  return [
    README_BEGIN,
    "| setting | proto Config field | default | bounds | unit | meaning |",
    "|---|---|---|---|---|---|",
    ...rows,
    "",
    `- Pulse inputs (sampled in C every ${PULSE_SAMPLE_MS} ms): ${Object.entries(PULSE_LIMITS)
      .map(([board, l]) => `${board} counts pulses and gaps of at least ${l.minPulseMs} ms, at most ${l.maxPulseHz}/s`)
      .join(
        "; ",
      )}. Pulses of ${ms} ms: at most ${round1(maxPulseHz(ms))} pulses/s count; ${flows.join(", ")}; ${powers.join(", ")}.`,
    `- Worst-case sealed readings frame for BATCH = 1..${batches.length}: ${batches.join(", ")} B; a flash slot holds ${STORAGE.slotStateBytes} B of the queue's state and a frame of ${STORAGE.maxFrameBytes} B.`,
    `- Queue: ${b.slots} slots x ${entryBytes(b.slotBytes)} B = ${b.queueBytes} B, plus ${b.otherBytes} B for every other setting at its largest, ${b.runtimeBytes} B for the runtime's Wi-Fi, cloud link and program records and ${b.gcHeadroomBytes} B of room to rewrite a slot; settings banks: ${banks.join(", ")}.`,
    README_END,
  ].join("\n")
}
