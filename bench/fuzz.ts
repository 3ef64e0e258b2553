// Fuzz the running bridge (a script, not CI):
//   `npm run fuzz -- [--frames N] [--engine pglite|postgres] [--sealed]`.
//
// A production bridge (registry on, its own process) on a private Mosquitto, two provisioned meters
// with a birth and real readings frames, then N mutated copies of those frames: bit flips, byte
// overwrites, truncation, insertion, repeated chunks; one in ten is published on the other meter's
// topic (a forgery attempt). Reports frames sent, the bridge's outcome counts by reason, frames
// stored, the bridge's peak RSS (VmHWM), the data tier's growth and the dead letters kept.
import { randomBytes, randomInt } from "node:crypto"
import { execFileSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import mqtt from "mqtt"
import pg from "pg"
import { citymeter } from "../bridge/src/gen/citymeter.js"
import { sealUplink } from "../testkit/frames.js"
import { upTopic } from "../bridge/src/topics.js"
import { PG_URL, dropSchema } from "../testkit/services.js"
import { BridgeProcess, MosquittoProcess } from "../testkit/infra.js"
import { encodeCitymeter, householdBatch } from "./frames.js"

const { Uplink } = citymeter.v1
const args = process.argv.slice(2)
const arg = (name: string, dflt: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt)
const FRAMES = Number(arg("--frames", "1000000"))
const ENGINE = arg("--engine", "pglite")
/** --sealed: the meters are provisioned with keys and their frames sealed: 0 must be stored. */
const SEALED = args.includes("--sealed")
const TOKEN = randomBytes(12).toString("hex")
const METERS = ["fuzz-a", "fuzz-b"]
const BOOT = 3
const SEEDS = 20

/** One mutation of a frame, as a fuzzer would make it (or a flaky radio, or a firmware bug). */
function mutate(src: Uint8Array): Buffer {
  const b = Buffer.from(src)
  switch (randomInt(6)) {
    case 0:
    case 1: {
      for (let i = 0, n = 1 + randomInt(3); i < n; i++) b[randomInt(b.length)] ^= 1 << randomInt(8)
      return b
    }
    case 2:
      b[randomInt(b.length)] = randomInt(256)
      return b
    case 3:
      return b.subarray(0, randomInt(b.length))
    case 4: {
      const at = randomInt(b.length + 1)
      return Buffer.concat([b.subarray(0, at), Buffer.from([randomInt(256)]), b.subarray(at)])
    }
    default: {
      const at = randomInt(b.length)
      const len = 1 + randomInt(Math.min(16, b.length - at))
      return Buffer.concat([b.subarray(0, at + len), b.subarray(at, at + len), b.subarray(at + len)])
    }
  }
}

function metric(text: string, name: string): Record<string, number> {
  const out: Record<string, number> = {}
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[a-z]+="([^"]*)"\\})? (\\S+)$`, "gm")))
    out[m[1] ?? ""] = Number(m[2])
  return out
}
const sum = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0)
const du = (dir: string) => Number(execFileSync("du", ["-sb", dir]).toString().split("\t")[0])

const mosquitto = await MosquittoProcess.create()
const dataDir = mkdtempSync(join(tmpdir(), "cm-fuzz-db-"))
const schema = `fuzz_${randomBytes(4).toString("hex")}`
const bridge = new BridgeProcess({
  MQTT_URL: mosquitto.url,
  DATABASE_URL: ENGINE === "postgres" ? PG_URL : `pglite:${dataDir}`,
  ...(ENGINE === "postgres" ? { DATABASE_SCHEMA: schema } : {}),
  MQTT_CLIENT_ID: "fuzz-bridge",
  API_TOKEN: TOKEN,
  LOG_LEVEL: "error",
})
await bridge.start()
const dbBytes = async () => {
  if (ENGINE !== "postgres") return du(dataDir)
  const c = new pg.Client({ connectionString: PG_URL })
  await c.connect()
  const { rows } = await c.query(
    `SELECT coalesce(sum(pg_total_relation_size(format('%I.%I', schemaname, tablename))), 0)::bigint AS n
     FROM pg_tables WHERE schemaname = $1`,
    [schema],
  )
  await c.end()
  return Number(rows[0].n)
}
const metrics = async () => (await fetch(`${bridge.apiUrl}/metrics`)).text()
const received = async () => sum(metric(await metrics(), "citymeter_frames_received_total"))
const bridgePid = bridge.pid!
const vmHwmMiB = () => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${bridgePid}/status`, "utf8"))![1]) / 1024

const keys = new Map(METERS.map((m) => [m, randomBytes(32)]))
for (const m of METERS) {
  const res = await fetch(`${bridge.apiUrl}/meters/${m}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify(SEALED ? { key: keys.get(m)!.toString("hex") } : { policy: "open" }),
  })
  if (!res.ok) throw new Error(`registering ${m}: HTTP ${res.status}`)
}
const frameFor = (m: string, u: citymeter.v1.IUplink) =>
  Buffer.from(SEALED ? sealUplink(keys.get(m)!, u) : Uplink.encode(u).finish())
const pub = await mqtt.connectAsync(mosquitto.url, { clientId: "fuzz-pub" })
// the real traffic: a birth and SEEDS readings frames per meter
const nowS = Math.floor(Date.now() / 1000)
const seeds: Uint8Array[] = []
for (const m of METERS) {
  const birth = {
    boot: BOOT,
    seq: 0,
    birth: { firmware: "0.2.0", board: "esp32c3", intervalS: 900, batch: 4, uptimeS: 10 },
  }
  await pub.publishAsync(upTopic(m, "birth"), frameFor(m, Uplink.fromObject({ ...birth, link: 1 })), { qos: 1 })
  for (let s = 1; s <= SEEDS; s++) {
    const f = Uplink.decode(encodeCitymeter(householdBatch(4, s, nowS - 86400 + s * 3600)))
    f.boot = BOOT
    const bytes = frameFor(m, f)
    seeds.push(bytes)
    await pub.publishAsync(upTopic(m, "readings"), Buffer.from(bytes), { qos: 1 })
  }
}
const base = METERS.length * (SEEDS + 1)
while ((await received()) < base) await new Promise((r) => setTimeout(r, 100))
await new Promise((r) => setTimeout(r, 1000))
const before = { text: await metrics(), db: await dbBytes(), rssMiB: vmHwmMiB() }
const storedBefore = sum(metric(before.text, "citymeter_frames_stored_total"))

console.log(`fuzz: ${FRAMES} mutated frames at a ${ENGINE} bridge (pid ${bridgePid}) ...`)
const t0 = Date.now()
let sent = 0
let forged = 0
const WINDOW = 2000
while (sent < FRAMES) {
  const batch: Promise<unknown>[] = []
  for (let i = 0; i < WINDOW && sent < FRAMES; i++, sent++) {
    const seedIndex = randomInt(seeds.length)
    const own = METERS[Math.floor(seedIndex / SEEDS)]
    const other = randomInt(10) === 0
    if (other) forged++
    const meter = other ? METERS.find((m) => m !== own)! : own
    batch.push(pub.publishAsync(upTopic(meter, "readings"), mutate(seeds[seedIndex]), { qos: 1 }))
  }
  await Promise.all(batch)
  if (sent % 100_000 === 0) console.log(`  published ${sent} (${Math.round((Date.now() - t0) / 1000)} s)`)
}
let peak = 0
for (;;) {
  peak = Math.max(peak, vmHwmMiB())
  const n = await received()
  if (n >= base + FRAMES) break
  await new Promise((r) => setTimeout(r, 2000))
}
// wait for the last frames' outcomes (received is counted on arrival)
await new Promise((r) => setTimeout(r, 3000))
const seconds = (Date.now() - t0) / 1000
const text = await metrics()
peak = Math.max(peak, vmHwmMiB())
const rejected = metric(text, "citymeter_frames_rejected_total")
const stored = sum(metric(text, "citymeter_frames_stored_total")) - storedBefore
const duplicates =
  sum(metric(text, "citymeter_frames_duplicate_total")) - sum(metric(before.text, "citymeter_frames_duplicate_total"))
const dbAfter = await dbBytes()
const letters = await (
  await fetch(`${bridge.apiUrl}/dead-letters?limit=1`, { headers: { authorization: `Bearer ${TOKEN}` } })
).json()
console.log(
  JSON.stringify(
    {
      engine: ENGINE,
      sealed: SEALED,
      sent: FRAMES,
      publishedOnTheOtherMetersTopic: forged,
      seconds: Math.round(seconds),
      framesPerSecond: Math.round(FRAMES / seconds),
      rejectedByReason: Object.fromEntries(Object.entries(rejected).sort((a, b) => b[1] - a[1])),
      rejected: sum(rejected),
      duplicates,
      stored,
      bridgePeakRssMiBBeforeFuzz: Math.round(before.rssMiB),
      bridgePeakRssMiB: Math.round(peak),
      dataTierBytesBefore: before.db,
      dataTierBytesAfter: dbAfter,
      dataTierGrowthMiB: +((dbAfter - before.db) / 2 ** 20).toFixed(1),
      ...(ENGINE === "pglite" ? { walMiB: +(du(join(dataDir, "pg_wal")) / 2 ** 20).toFixed(1) } : {}),
      newestDeadLetterId: letters.deadLetters?.[0]?.id,
    },
    null,
    2,
  ),
)
await pub.endAsync()
await bridge.stop()
await mosquitto.stop()
if (ENGINE === "postgres") await dropSchema(schema)
rmSync(dataDir, { recursive: true, force: true })
process.exit(0)
