// `citymeter compact`: compacts the months before the hot window into blocks now (issue 24;
// bridge/src/store/compaction.ts), as the bridge does at each maintenance run. PGlite is one
// process: stop the bridge first. One transaction per batch of meters: interrupted at any point,
// a run loses nothing and the next one goes on where it stopped.
import type { Command } from "commander"
import { openStore } from "../bridge/src/store/engines.js"
import { usage } from "./errors.js"

interface Options {
  database: string
  schema?: string
  before?: string
  hotDays?: string
  metersPerTx?: string
}

const positive = (name: string, v: string | undefined, dflt: number) => {
  if (v === undefined) return dflt
  const n = Number(v)
  if (!Number.isInteger(n) || n < 1) throw usage(`${name} must be a positive whole number (got '${v}')`)
  return n
}

export async function compact(o: Options, print: (s: string) => void) {
  const before = o.before === undefined ? undefined : new Date(o.before)
  if (before && Number.isNaN(before.getTime())) throw usage(`--before must be an ISO 8601 time (got '${o.before}')`)
  const hotDays = positive("--hot-days", o.hotDays, 7)
  const metersPerTx = positive("--meters-per-tx", o.metersPerTx, 50)
  const store = await openStore(o.database, { schema: o.schema })
  try {
    await store.migrate()
    const t0 = performance.now()
    const done = await store.compactReadings(before ?? new Date(Date.now() - hotDays * 86_400_000), {
      metersPerTx,
      afterBatch: (n) => print(`batch ${n} committed`),
    })
    const ledger = await store.compactLedger(before ?? new Date(Date.now() - hotDays * 86_400_000), {
      metersPerTransaction: metersPerTx,
    })
    print(JSON.stringify({ ...done, ledger, seconds: +((performance.now() - t0) / 1000).toFixed(1) }))
  } finally {
    await store.close()
  }
}

export function registerCompact(program: Command, print: (s: string) => void) {
  program
    .command("compact")
    .description(
      "compact the readings of months that ended before the hot window into one block per meter and month, and the frame ledger",
    )
    .requiredOption(
      "--database <url>",
      "postgres://… or pglite:<dir> (the bridge's DATABASE_URL; stop a PGlite bridge first)",
    )
    .option("--schema <schema>", "PostgreSQL: the bridge's DATABASE_SCHEMA")
    .option(
      "--before <time>",
      "compact the months that ended before this month (ISO 8601); default: now minus --hot-days",
    )
    .option("--hot-days <n>", "days kept as rows (READINGS_HOT_DAYS)", "7")
    .option("--meters-per-tx <n>", "meters per transaction", "50")
    .action((o: Options) => compact(o, print))
}
